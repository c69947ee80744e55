// Shared by the mppx peers: a viem chain and client for anvil in Tempo mode.
//
// Through anvil, viem fills gas with eth_fillTransaction, whose estimate ignores a Tempo
// transaction's `calls` (docs/development.md): the transport raises the filled gas limit to
// `minimumGas` (only the gas used is charged). A real Tempo node does not need this.

import { createClient, custom, defineChain, http } from 'viem'
import { tempoLocalnet } from 'viem/chains'

export function gasRaisingTransport(url, minimumGas) {
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

export function anvilClient({ rpcUrl, chainId, account, minimumGas }) {
  const chain = defineChain({
    ...tempoLocalnet,
    id: chainId,
    name: 'Tempo (anvil)',
    rpcUrls: { default: { http: [rpcUrl] } },
  })
  return createClient({ account, chain, transport: gasRaisingTransport(rpcUrl, minimumGas) })
}
