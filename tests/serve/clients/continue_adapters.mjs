// Continue's own client code (@continuedev/openai-adapters) against a codetune server.
// usage: node continue_adapters.mjs BASE_URL PREFIX SUFFIX MAX_TOKENS  -> prints {"fim": ..., "completion": ...}
import { constructLlmApi } from "@continuedev/openai-adapters";

const [baseUrl, prefix, suffix, maxTokens] = process.argv.slice(2);
// The providers as a Continue config.yaml names them (docs/editors.md): mistral for FIM, openai for completions.
const mistral = constructLlmApi({ provider: "mistral", apiKey: "unused", apiBase: `${baseUrl}/v1/` });
const openai = constructLlmApi({ provider: "openai", apiKey: "unused", apiBase: `${baseUrl}/v1/` });
const signal = new AbortController().signal;
const body = { model: "codetune", max_tokens: Number(maxTokens), temperature: 0 };

let fim = "";
for await (const chunk of mistral.fimStream({ ...body, prompt: prefix, suffix }, signal)) {
  fim += chunk.choices[0].delta.content ?? "";
}
let completion = "";
for await (const chunk of openai.completionStream({ ...body, prompt: prefix, suffix, stream: true }, signal)) {
  completion += chunk.choices[0]?.text ?? "";
}
console.log(JSON.stringify({ fim, completion }));
