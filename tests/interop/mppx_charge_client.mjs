// Interop peer: mppx's tempo charge client (the official TypeScript SDK) pays one URL.
//
//   node mppx_charge_client.mjs < config.json
//   config = {url, rpcUrl, privateKey, chainId, gas?}   (read from stdin: keys never on argv)
//
// Prints one JSON line: {"status", "receipt" (the Payment-Receipt header or null), "body"} or
// {"error"}. The anvil gas workaround is in anvil_viem.mjs.

import { Mppx, tempo } from 'mppx/client'
import { privateKeyToAccount } from 'viem/accounts'
import { anvilClient } from './anvil_viem.mjs'

async function readStdin() {
  let text = ''
  for await (const chunk of process.stdin) text += chunk
  return JSON.parse(text)
}

async function main() {
  const args = await readStdin()
  const account = privateKeyToAccount(args.privateKey)
  const client = anvilClient({ ...args, account, minimumGas: BigInt(args.gas ?? 1_000_000) })
  const mppx = Mppx.create({
    methods: [tempo.charge({ account, getClient: () => client })],
    polyfill: false,
  })
  const response = await mppx.fetch(args.url)
  const body = await response.text()
  process.stdout.write(
    `${JSON.stringify({
      status: response.status,
      receipt: response.headers.get('payment-receipt'),
      body: body.slice(0, 2000),
    })}\n`,
  )
}

main().then(
  () => process.exit(0),
  (error) => {
    process.stdout.write(`${JSON.stringify({ error: String(error?.message ?? error).slice(0, 2000) })}\n`)
    process.exit(1)
  },
)
