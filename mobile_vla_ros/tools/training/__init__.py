"""Training the action expert (`mobile-vla-train`) and producing the shipped model."""
