"""TF Serving: SavedModel export of the generator and the hash encoder, and a client."""
