// End-to-end peer: mppx 0.11's legacy session client (`tempo.sessionLegacy`, the "Tempo Stream
// Channel" v1 client) pays one of our servers over SSE, then closes the channel cooperatively.
//
//   node mppx_session_client.mjs '<json>'
//   json = {url, rpcUrl, privateKey, chainId, escrow?, maxDeposit, gas?, streams?, stopAfter?}
//
// `stopAfter`: stop reading each stream after that many messages (the early stop of a user who
// has seen enough); the close is then signed from the last receipt the client saw.
//
// Prints one JSON object per line on stdout: {"kind": "request"|"message"|"receipt"|"close"|
// "done"|"error", ...}. Exits 0 after "done", 1 after "error". The caller bounds the run time.
//
// The anvil gas workaround is in anvil_viem.mjs.

import { tempo } from 'mppx/client'
import { privateKeyToAccount } from 'viem/accounts'
import { anvilClient } from './anvil_viem.mjs'

const args = JSON.parse(process.argv[2])
const out = (kind, data) => process.stdout.write(`${JSON.stringify({ kind, ...data })}\n`)

// Every request the client makes, with the credential action it carries (for the test).
function loggingFetch(input, init = {}) {
  const headers = new Headers(init.headers ?? {})
  const auth = headers.get('authorization')
  let action = null
  if (auth?.startsWith('Payment ')) {
    try {
      action = JSON.parse(Buffer.from(auth.slice(8), 'base64url').toString('utf8')).payload?.action
    } catch {
      action = 'unparseable'
    }
  }
  const started = { method: init.method ?? 'GET', action, accept: headers.get('accept') }
  return fetch(input, init).then((response) => {
    out('request', { ...started, status: response.status })
    return response
  })
}

async function main() {
  const account = privateKeyToAccount(args.privateKey)
  const client = anvilClient({ ...args, account, minimumGas: BigInt(args.gas ?? 3_000_000) })
  const manager = tempo.sessionLegacy({
    account,
    client,
    maxDeposit: args.maxDeposit,
    ...(args.escrow ? { escrowContract: args.escrow } : { allowCustomEscrow: true }),
    fetch: loggingFetch,
  })
  for (let i = 0; i < (args.streams ?? 1); i++) {
    const stream = await manager.sse(args.url, {
      onReceipt: (receipt) => out('receipt', { receipt }),
    })
    let seen = 0
    for await (const data of stream) {
      out('message', { data, stream: i })
      if (args.stopAfter !== undefined && ++seen >= args.stopAfter) break
    }
  }
  const receipt = await manager.close()
  out('close', { receipt: receipt ?? null, channelId: manager.channelId ?? null })
  out('done', {})
}

main().then(
  () => process.exit(0),
  (error) => {
    out('error', { message: String(error?.message ?? error).slice(0, 2000) })
    process.exit(1)
  },
)
