"""Array transforms shared by training and inference."""
