"""padir's gin files. A package only so that gin resolves ``include 'padir/gin/...'`` from an installed padir."""
