"""The charge intent of the tempo method: one TIP-20 payment per request.

`ChargeTerms` is the challenge's request (mpp.charge.terms); `ChargeServer` verifies a
credential and takes the payment exactly once (mpp.charge.server); `ChargePayer` checks a
request against the payer's policy and signs what pays it (mpp.charge.payer). The session
intent's stores, chain adapter and payer key serve both intents.
"""

from mpp.charge.payer import ChargePayer
from mpp.charge.server import Charged, ChargeServer
from mpp.charge.terms import ChargeTerms, Split, Transfer

__all__ = ["ChargePayer", "ChargeServer", "ChargeTerms", "Charged", "Split", "Transfer"]
