"""Gin files (runs); see docs/gin.md."""
