"""The session intent: vouchers, Tempo transactions, the server engine and the payer."""
