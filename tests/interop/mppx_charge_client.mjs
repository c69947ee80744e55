// Interop peer: mppx's tempo charge client (the official TypeScript SDK) pays one URL.
//
//   node mppx_charge_client.mjs < config.json
//   config = {url, rpcUrl, privateKey, chainId, gas?}   (read from stdin: keys never on argv)
//
// Prints one JSON line: {"status", "receipt" (the Payment-Receipt header or null), "body"} or
// {"error"}. Through anvil, viem fills gas with eth_fillTransaction, whose estimate ignores a
// Tempo transaction's `calls` (TOOLCHAIN.md): the transport raises the filled gas limit (only
// the gas used is charged). A real Tempo node does not need this.

import { Mppx, tempo } from 'mppx/client'
import { createClient, custom, defineChain, http } from 'viem'
import { privateKeyToAccount } from 'viem/accounts'
import { tempoLocalnet } from 'viem/chains'

function gasRaisingTransport(url, minimumGas) {
  const inner = http(url, { timeout: 10_000 })
  return (options) => {
    const base = inner(options)
    return custom({
      async request({ method, params }) {
        const result = await base.request({ method, params })
        if (method === 'eth_fillTransaction' && result?.tx?.gas !== undefined) {
          if (BigInt(result.tx.gas) < minimumGas) result.tx.gas = `0x${minimumGas.toString(16)}`
        }
        if (method === 'eth_estimateGas' && BigInt(result) < minimumGas)
          return `0x${minimumGas.toString(16)}`
        return result
      },
    })(options)
  }
}

async function readStdin() {
  let text = ''
  for await (const chunk of process.stdin) text += chunk
  return JSON.parse(text)
}

async function main() {
  const args = await readStdin()
  const chain = defineChain({
    ...tempoLocalnet,
    id: args.chainId,
    name: 'Tempo (anvil)',
    rpcUrls: { default: { http: [args.rpcUrl] } },
  })
  const account = privateKeyToAccount(args.privateKey)
  const client = createClient({
    account,
    chain,
    transport: gasRaisingTransport(args.rpcUrl, BigInt(args.gas ?? 1_000_000)),
  })
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
