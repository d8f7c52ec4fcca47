"""SavedModel export with documented signatures, the TF Serving REST stand-in and the check of a
served model against its SavedModel."""
