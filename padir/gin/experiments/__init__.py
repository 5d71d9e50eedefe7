"""Gin files (experiments); see docs/gin.md."""
