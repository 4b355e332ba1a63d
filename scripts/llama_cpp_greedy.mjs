// Greedy tokens from real llama.cpp (node-llama-cpp's prebuilt binaries) for a GGUF model, with a GGUF LoRA or not.
// Run from a folder where `npm i -E node-llama-cpp@3.21.1` was done (copy this file there):
//   node llama_cpp_greedy.mjs '{"model": "m.gguf", "lora": "a.gguf", "prompt_ids": [1, 2], "prompt": "text", "tokens": 10}'
// Prints one JSON line: {"tokens": [...], "text": "...", "prompt_ids": [...]} (prompt_ids: how llama.cpp tokenizes
// "prompt", special tokens included). The tokens continue "prompt_ids" when given, else llama.cpp's own ids.
import {getLlama} from "node-llama-cpp";

const request = JSON.parse(process.argv[2]);
const llama = await getLlama({gpu: false, build: "never", logLevel: "error"});
const model = await llama.loadModel({modelPath: request.model});
// One thread: on a busy machine two spin-waiting threads slowed a 135M model from seconds to minutes.
const context = await model.createContext({contextSize: 256, threads: request.threads ?? 1,
                                          ...(request.lora ? {lora: request.lora} : {})});
const sequence = context.getSequence();
const ownIds = request.prompt ? Array.from(model.tokenize(request.prompt, true)) : [];
const tokens = [];
for await (const token of sequence.evaluate(request.prompt_ids ?? ownIds, {temperature: 0})) {
    tokens.push(token);
    if (tokens.length >= request.tokens) break;
}
console.log(JSON.stringify({tokens, text: model.detokenize(tokens), prompt_ids: ownIds}));
await context.dispose();
await model.dispose();
await llama.dispose();
