"""Sans-I/O protocol core for the Payment HTTP authentication scheme."""
