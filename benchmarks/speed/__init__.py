"""The speed suite: time and memory of one optimizer step against the copy roofline."""
