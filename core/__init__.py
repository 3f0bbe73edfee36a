"""The bottom layer: vocabulary every package may import (market rules such as fees); imports nothing above it."""
