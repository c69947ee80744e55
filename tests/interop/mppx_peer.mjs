// Interop peer: the official TypeScript SDK (mppx 0.11, npm), driven over JSON lines.
//
// One request per stdin line: {"op": "...", ...}; one answer per stdout line, in order:
// {"ok": true, "result": ...} or {"ok": false, "error": "<Name>: <message>"}.
// BigInts in results are rendered as decimal strings. The process ends when stdin closes.
// Only mppx's public entry points are used ('mppx', 'mppx/tempo'), plus viem for keys.

import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { createInterface } from 'node:readline'

import { Challenge, Credential, PaymentRequest, Receipt, BodyDigest } from 'mppx'
import { SessionLegacy } from 'mppx/tempo'
import { createClient, custom, hashTypedData } from 'viem'
import { privateKeyToAccount } from 'viem/accounts'

const require = createRequire(import.meta.url)
const { Channel, Voucher } = SessionLegacy.Session

// Vouchers are signed locally: the client never needs a transport, so refuse any RPC.
const offline = createClient({
  transport: custom({
    async request({ method }) {
      throw new Error(`offline peer: no RPC (${method})`)
    },
  }),
})

function challengeParams(m) {
  const params = { realm: m.realm, method: m.method, intent: m.intent, request: m.request }
  for (const k of ['expires', 'digest', 'opaque', 'meta', 'header', 'description', 'id']) {
    if (m[k] !== undefined && m[k] !== null) params[k] = m[k]
  }
  return params
}

function challengeDict(c) {
  return { ...c, request_b64: PaymentRequest.serialize(c.request) }
}

// A credential's challenge may be given as a WWW-Authenticate value or as a parsed dict.
function toChallenge(value) {
  if (typeof value === 'string') return Challenge.deserialize(value)
  const { request_b64: _ignored, ...rest } = value
  return Challenge.Schema.parse(rest)
}

function voucherDomain(m) {
  return {
    name: m.domainName ?? 'Tempo Stream Channel',
    version: '1',
    chainId: Number(m.chainId),
    verifyingContract: m.escrow,
  }
}

const voucherTypes = {
  Voucher: [
    { name: 'channelId', type: 'bytes32' },
    { name: 'cumulativeAmount', type: 'uint128' },
  ],
}

const ops = {
  version() {
    // dist/index.js -> package root (package.json is not in the exports map)
    const entry = require.resolve('mppx')
    const root = entry.slice(0, entry.lastIndexOf('/dist/'))
    return JSON.parse(readFileSync(`${root}/package.json`, 'utf8')).version
  },
  challenge_id(m) {
    return Challenge.from({ ...challengeParams(m), secretKey: m.secret }).id
  },
  create_challenge(m) {
    const c = Challenge.from({ ...challengeParams(m), secretKey: m.secret })
    return { header: Challenge.serialize(c), challenge: challengeDict(c) }
  },
  parse_challenge(m) {
    const c = Challenge.deserialize(m.header)
    const verified = m.secret ? Challenge.verify(c, { secretKey: m.secret }) : null
    return { challenge: challengeDict(c), verified }
  },
  parse_challenges(m) {
    return Challenge.deserializeList(m.header).map(challengeDict)
  },
  verify_challenge(m) {
    return Challenge.verify(toChallenge(m.challenge), { secretKey: m.secret })
  },
  serialize_credential(m) {
    const credential = Credential.from({
      challenge: toChallenge(m.challenge),
      payload: m.payload,
      ...(m.source ? { source: m.source } : {}),
    })
    return Credential.serialize(credential)
  },
  parse_credential(m) {
    const c = Credential.deserialize(m.header)
    return { ...c, challenge: challengeDict(c.challenge) }
  },
  serialize_receipt(m) {
    return Receipt.serialize(Receipt.from(m.receipt))
  },
  parse_receipt(m) {
    return Receipt.deserialize(m.header)
  },
  // The strict check its session client applies to every Payment-Receipt and receipt event.
  parse_session_receipt(m) {
    const json = Buffer.from(m.header, 'base64url').toString('utf8')
    const value = JSON.parse(json)
    if (!isSessionReceipt(value)) throw new Error('Invalid session receipt.')
    return value
  },
  body_digest(m) {
    return BodyDigest.compute(m.body)
  },
  channel_id(m) {
    return Channel.computeId({
      payer: m.payer,
      payee: m.payee,
      token: m.token,
      salt: m.salt,
      authorizedSigner: m.authorizedSigner,
      escrowContract: m.escrow,
      chainId: Number(m.chainId),
    })
  },
  voucher_digest(m) {
    return hashTypedData({
      domain: voucherDomain(m),
      types: voucherTypes,
      primaryType: 'Voucher',
      message: { channelId: m.channelId, cumulativeAmount: BigInt(m.cumulativeAmount) },
    })
  },
  async sign_voucher(m) {
    const account = privateKeyToAccount(m.privateKey)
    const message = { channelId: m.channelId, cumulativeAmount: BigInt(m.cumulativeAmount) }
    const signature = await Voucher.signVoucher(offline, account, message, m.escrow, Number(m.chainId))
    return { signature, signer: account.address }
  },
  async verify_voucher(m) {
    const voucher = {
      channelId: m.channelId,
      cumulativeAmount: BigInt(m.cumulativeAmount),
      signature: m.signature,
    }
    return Voucher.verifyVoucher(m.escrow, Number(m.chainId), voucher, m.signer)
  },
}

// Mirror of mppx's session receipt guard (tempo/session/precompile/Protocol.js isSessionReceipt),
// which its legacy client applies through deserializeSessionReceipt; not a public export.
function isSessionReceipt(v) {
  return (
    v !== null &&
    typeof v === 'object' &&
    v.method === 'tempo' &&
    v.intent === 'session' &&
    v.status === 'success' &&
    typeof v.timestamp === 'string' &&
    typeof v.reference === 'string' &&
    typeof v.challengeId === 'string' &&
    typeof v.channelId === 'string' &&
    typeof v.acceptedCumulative === 'string' &&
    typeof v.spent === 'string' &&
    (v.units === undefined || typeof v.units === 'number') &&
    (v.txHash === undefined || typeof v.txHash === 'string')
  )
}

function replacer(_key, value) {
  return typeof value === 'bigint' ? value.toString() : value
}

async function handle(line) {
  let message
  try {
    message = JSON.parse(line)
    const op = ops[message.op]
    if (!op) throw new Error(`unknown op ${message.op}`)
    const result = await op(message)
    return JSON.stringify({ ok: true, result: result ?? null }, replacer)
  } catch (error) {
    const name = error?.name ?? 'Error'
    const text = String(error?.message ?? error).split('\n')[0]
    return JSON.stringify({ ok: false, error: `${name}: ${text}` })
  }
}

const rl = createInterface({ input: process.stdin, crlfDelay: Number.POSITIVE_INFINITY })
let queue = Promise.resolve()
rl.on('line', (line) => {
  if (!line.trim()) return
  queue = queue.then(async () => {
    process.stdout.write(`${await handle(line)}\n`)
  })
})
rl.on('close', () => {
  queue.then(() => process.exit(0))
})
