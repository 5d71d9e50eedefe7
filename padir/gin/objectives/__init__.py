"""Gin files (objectives); see docs/gin.md."""
