// sdk_test.mjs: the official OpenAI Node SDK, unchanged, against a ferry URL.
// Env: FERRY_BASE_URL (".../v1"), FERRY_API_KEY, FERRY_MODEL. Exits non-zero
// with a message on the first mismatch.
import OpenAI from 'openai';

const baseURL = process.env.FERRY_BASE_URL;
const model = process.env.FERRY_MODEL;
const client = new OpenAI({ baseURL, apiKey: process.env.FERRY_API_KEY || 'none', maxRetries: 0, timeout: 60000 });

function check(cond, what) {
  if (!cond) {
    console.error(`FAIL: ${what}`);
    process.exit(1);
  }
}

// List models.
const models = await client.models.list();
const ids = models.data.map((m) => m.id);
check(ids.includes(model), `models.list has ${model}: ${JSON.stringify(ids)}`);

// A chat completion.
const messages = [{ role: 'system', content: 'You are terse.' }, { role: 'user', content: 'Say hello.' }];
const chat = await client.chat.completions.create({ model, messages, max_tokens: 12, temperature: 0, seed: 1, ignore_eos: true });
check(chat.object === 'chat.completion', `object ${chat.object}`);
check(chat.id.startsWith('chatcmpl-'), `id ${chat.id}`);
check(chat.choices.length === 1 && chat.choices[0].message.role === 'assistant', 'one assistant choice');
check(typeof chat.choices[0].message.content === 'string', 'content is a string');
check(['stop', 'length'].includes(chat.choices[0].finish_reason), `finish_reason ${chat.choices[0].finish_reason}`);
check(chat.usage.prompt_tokens > 0 && chat.usage.completion_tokens > 0 &&
      chat.usage.total_tokens === chat.usage.prompt_tokens + chat.usage.completion_tokens, 'usage adds up');
check(chat.usage.completion_tokens <= 12, 'max_tokens respected');

// The same, streamed: the deltas concatenate to the same text (greedy).
const stream = await client.chat.completions.create({
  model, messages, max_tokens: 12, temperature: 0, seed: 1, ignore_eos: true, stream: true, stream_options: { include_usage: true },
});
let text = '';
let finish = null;
let usage = null;
let chunks = 0;
for await (const chunk of stream) {
  chunks++;
  check(chunk.object === 'chat.completion.chunk', `chunk object ${chunk.object}`);
  if (chunk.usage) usage = chunk.usage;
  for (const c of chunk.choices) {
    if (c.delta && c.delta.content) text += c.delta.content;
    if (c.finish_reason) finish = c.finish_reason;
  }
}
check(chunks >= 2, `several chunks (${chunks})`);
check(text === chat.choices[0].message.content, `streamed text ${JSON.stringify(text)} == ${JSON.stringify(chat.choices[0].message.content)}`);
check(finish === chat.choices[0].finish_reason, `streamed finish ${finish}`);
check(usage && usage.completion_tokens === chat.usage.completion_tokens && usage.prompt_tokens === chat.usage.prompt_tokens, `stream usage ${JSON.stringify(usage)}`);

// A completion (legacy endpoint) with n = 2.
const cmpl = await client.completions.create({ model, prompt: 'Once upon a time', max_tokens: 5, n: 2, temperature: 0.8, seed: 3 });
check(cmpl.object === 'text_completion' && cmpl.choices.length === 2, 'two completion choices');
check(cmpl.usage.completion_tokens <= 10, 'completion usage');

// What the SDK's types allow and harnesses send: a batch of prompts (string[]
// and number[][]), echo with max_tokens 0 and logprobs (scoring), logit_bias.
const batch = await client.completions.create({ model, prompt: ['Once upon a time', 'Hello'], max_tokens: 4, n: 2, temperature: 0 });
check(batch.choices.length === 4 && batch.choices.map((c) => c.index).join() === '0,1,2,3', 'batch: prompt-major indexes');
check(batch.choices[0].text === batch.choices[1].text && batch.choices[2].text === batch.choices[3].text, 'batch: greedy samples agree');
const one = await client.completions.create({ model, prompt: 'Hello', max_tokens: 4, temperature: 0 });
check(batch.choices[2].text === one.choices[0].text, `batch text ${JSON.stringify(batch.choices[2].text)} == single ${JSON.stringify(one.choices[0].text)}`);
check(batch.usage.prompt_tokens === one.usage.prompt_tokens + (await client.completions.create({ model, prompt: 'Once upon a time', max_tokens: 1 })).usage.prompt_tokens, 'batch usage sums the prompts');
const scored = await client.completions.create({ model, prompt: [[1, 260, 261, 262]], echo: true, max_tokens: 0, logprobs: 1, temperature: 0 });
const lp = scored.choices[0].logprobs;
check(lp.tokens.length === 4 && lp.token_logprobs[0] === null && lp.token_logprobs.slice(1).every((x) => x <= 0), `scored logprobs ${JSON.stringify(lp)}`);
check(scored.usage.completion_tokens === 0 && scored.choices[0].finish_reason === 'length', 'scoring generates nothing');
const biased = await client.completions.create({ model, prompt: 'Hello', max_tokens: 3, temperature: 0, logit_bias: { 300: 100 } });
check(biased.usage.completion_tokens === 3, 'logit_bias accepted');
try {
  await client.completions.create({ model, prompt: 'Hello', logit_bias: { 300: 101 } });
  check(false, 'logit_bias 101 was accepted');
} catch (e) {
  check(e.status === 400 && e.param === 'logit_bias', `logit_bias 101: ${e.status} ${e.param}`);
}

// An error: the SDK raises a 400 naming the parameter.
try {
  await client.chat.completions.create({ model, messages, temperature: 5 });
  check(false, 'temperature 5 was accepted');
} catch (e) {
  check(e instanceof OpenAI.APIError, `an APIError (${e})`);
  check(e.status === 400, `status ${e.status}`);
  check(e.param === 'temperature', `param ${e.param}`);
  check(e.type === 'invalid_request_error', `type ${e.type}`);
}
// An unknown model: 404.
try {
  await client.chat.completions.create({ model: 'no-such-model', messages });
  check(false, 'an unknown model was accepted');
} catch (e) {
  check(e.status === 404, `unknown model: status ${e.status}`);
}
console.log('ok: OpenAI Node SDK: models.list, chat, streamed chat with usage, completions n=2, batched prompts, echo scoring, logit_bias, 400 with param, 404');
