"""The bottom layer: the vocabulary every package may import (frames and feed names, clocks, venue
endpoints, the parse error, fees); it imports nothing of the project."""
