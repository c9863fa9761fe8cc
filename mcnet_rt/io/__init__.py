"""Reading and writing the images and videos the engine consumes and produces."""
