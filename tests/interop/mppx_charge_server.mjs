// Interop peer: a tempo charge server built with mppx (the official TypeScript SDK), one paid
// route on loopback with Node's http server.
//
//   node mppx_charge_server.mjs < config.json
//   config = {port, rpcUrl, chainId, recipient, currency, secret, amount (token units)}
//
// Prints {"ready": true} once listening; serves until stdin closes or it is terminated.

import { createServer } from 'node:http'
import { Mppx, tempo } from 'mppx/server'
import { createClient, defineChain, http } from 'viem'
import { tempoLocalnet } from 'viem/chains'

async function readLine() {
  let text = ''
  for await (const chunk of process.stdin) {
    text += chunk
    if (text.includes('\n')) break
  }
  return JSON.parse(text)
}

const args = await readLine()
const chain = defineChain({
  ...tempoLocalnet,
  id: args.chainId,
  name: 'Tempo (anvil)',
  rpcUrls: { default: { http: [args.rpcUrl] } },
})
const client = createClient({ chain, transport: http(args.rpcUrl, { timeout: 10_000 }) })
const mppx = Mppx.create({
  methods: [tempo.charge({ currency: args.currency, recipient: args.recipient, getClient: () => client })],
  secretKey: args.secret,
  realm: 'mppx.peer',
})

const server = createServer(async (req, res) => {
  try {
    const headers = new Headers()
    for (const [name, value] of Object.entries(req.headers)) {
      if (typeof value === 'string') headers.set(name, value)
    }
    const request = new Request(`http://127.0.0.1:${args.port}${req.url}`, { method: req.method, headers })
    const result = await mppx.charge({ amount: args.amount })(request)
    const response = result.status === 402 ? result.challenge : result.withReceipt(Response.json({ paid: true }))
    res.statusCode = response.status
    response.headers.forEach((value, name) => res.setHeader(name, value))
    res.end(Buffer.from(await response.arrayBuffer()))
  } catch (error) {
    res.statusCode = 500
    res.end(JSON.stringify({ error: String(error?.message ?? error).slice(0, 2000) }))
  }
})
server.listen(args.port, '127.0.0.1', () => process.stdout.write(`${JSON.stringify({ ready: true })}\n`))
process.stdin.on('end', () => server.close(() => process.exit(0)))
