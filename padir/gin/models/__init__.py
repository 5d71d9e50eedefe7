"""Gin files (models); see docs/gin.md."""
