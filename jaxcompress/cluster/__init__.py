"""Weight sharing: k-means clustering with trained centroids."""
