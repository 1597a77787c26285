// tools_test.mjs: tool calling and structured outputs with the official OpenAI
// Node SDK, unchanged, against a ferry URL; outputs validated with ajv.
// Env: FERRY_BASE_URL (".../v1"), FERRY_API_KEY, FERRY_MODELS ("a,b": models
// to run the seeded generations on), FERRY_TOOL_MODEL (the round trip's),
// FERRY_RUNS (generations per case, default 200). Exits non-zero with a
// message on the first mismatch.
import OpenAI from 'openai';
import { zodResponseFormat } from 'openai/helpers/zod';
import Ajv2020 from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';
import { z } from 'zod';

const baseURL = process.env.FERRY_BASE_URL;
const models = process.env.FERRY_MODELS.split(',');
const toolModel = process.env.FERRY_TOOL_MODEL || models[0];
const runs = Number(process.env.FERRY_RUNS || 200);
const client = new OpenAI({ baseURL, apiKey: process.env.FERRY_API_KEY || 'none', maxRetries: 0, timeout: 120000 });
const ajv = new Ajv2020({ strict: false, allErrors: true }); // JSON Schema 2020-12: prefixItems, $defs
addFormats(ajv);

function check(cond, what) {
  if (!cond) {
    console.error(`FAIL: ${what}`);
    process.exit(1);
  }
}

const weather = {
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'The weather in a city',
    strict: true,
    parameters: {
      type: 'object',
      properties: {
        city: { type: 'string', maxLength: 12 },
        unit: { enum: ['c', 'f'] },
        days: { type: 'integer', minimum: 1, maximum: 7 },
      },
      required: ['city', 'unit', 'days'],
      additionalProperties: false,
    },
  },
};
const lookup = {
  type: 'function',
  function: {
    name: 'lookup',
    parameters: {
      type: 'object',
      properties: {
        id: { type: 'string', format: 'uuid' },
        when: { type: ['string', 'null'], format: 'date' },
        tags: { type: 'array', items: { enum: ['a', 'b', 'c'] }, maxItems: 3 },
      },
      required: ['id', 'tags'],
      additionalProperties: false,
    },
  },
};
const tools = [weather, lookup];
const validators = Object.fromEntries(tools.map((t) => [t.function.name, ajv.compile(t.function.parameters)]));

// A schema with $defs and recursion, anyOf, nullable, prefixItems, formats.
const answerSchema = {
  type: 'object',
  properties: {
    title: { type: 'string', minLength: 1, maxLength: 8 },
    score: { type: 'integer', minimum: -5, maximum: 250 },
    ok: { type: 'boolean' },
    when: { type: 'string', format: 'date-time' },
    pair: { type: 'array', prefixItems: [{ type: 'integer', minimum: 0, maximum: 9 }, { const: 'x' }], items: false, minItems: 2 },
    kind: { anyOf: [{ enum: ['red', 'green'] }, { type: 'null' }] },
    tree: { $ref: '#/$defs/node' },
  },
  required: ['title', 'score', 'ok', 'when', 'pair', 'kind', 'tree'],
  additionalProperties: false,
  $defs: {
    node: {
      type: 'object',
      properties: { v: { type: 'integer', minimum: 0, maximum: 3 }, kids: { type: 'array', items: { $ref: '#/$defs/node' }, maxItems: 1 } },
      required: ['v', 'kids'],
      additionalProperties: false,
    },
  },
};
const validateAnswer = ajv.compile(answerSchema);

function validCall(call, what) {
  check(call.type === 'function' && typeof call.id === 'string' && call.id.length > 0, `${what}: call shape ${JSON.stringify(call)}`);
  const v = validators[call.function.name];
  check(v, `${what}: unknown tool ${call.function.name}`);
  let args;
  try {
    args = JSON.parse(call.function.arguments);
  } catch (e) {
    check(false, `${what}: arguments do not parse: ${JSON.stringify(call.function.arguments)}`);
  }
  check(v(args), `${what}: arguments ${call.function.arguments} fail the schema: ${ajv.errorsText(v.errors)}`);
}

// 1. A tool round trip: a call, the tool's result as a tool message, a final answer.
const messages = [{ role: 'user', content: 'What is the weather in Paris?' }];
const first = await client.chat.completions.create({
  model: toolModel, messages, tools, tool_choice: 'required', parallel_tool_calls: false, temperature: 1, seed: 11, max_tokens: 400,
});
const msg = first.choices[0].message;
check(first.choices[0].finish_reason === 'tool_calls', `round trip finish_reason ${first.choices[0].finish_reason}`);
check(msg.content === null && Array.isArray(msg.tool_calls) && msg.tool_calls.length === 1, `one tool call: ${JSON.stringify(msg)}`);
validCall(msg.tool_calls[0], 'round trip');
messages.push(msg);
messages.push({ role: 'tool', tool_call_id: msg.tool_calls[0].id, content: '{"temperature": 22}' });
const final = await client.chat.completions.create({ model: toolModel, messages, tools, tool_choice: 'none', temperature: 0, max_tokens: 16 });
check(typeof final.choices[0].message.content === 'string' && !final.choices[0].message.tool_calls, `final answer: ${JSON.stringify(final.choices[0].message)}`);
check(['stop', 'length'].includes(final.choices[0].finish_reason), `final finish ${final.choices[0].finish_reason}`);

// The same first request streamed and assembled by the SDK's own helper:
// the same calls (names and arguments; ids are new).
const runner = client.beta.chat.completions.stream({
  model: toolModel, messages: messages.slice(0, 1), tools, tool_choice: 'required', parallel_tool_calls: false, temperature: 1, seed: 11, max_tokens: 400,
});
let argDeltas = 0;
runner.on('tool_calls.function.arguments.delta', () => argDeltas++);
const streamed = await runner.finalChatCompletion();
const smsg = streamed.choices[0].message;
check(smsg.tool_calls && smsg.tool_calls.length === 1, `streamed: one call ${JSON.stringify(smsg)}`);
check(smsg.tool_calls[0].function.name === msg.tool_calls[0].function.name &&
      smsg.tool_calls[0].function.arguments === msg.tool_calls[0].function.arguments,
      `streamed call ${JSON.stringify(smsg.tool_calls[0])} == ${JSON.stringify(msg.tool_calls[0])}`);
check(argDeltas >= 1, 'arguments came as deltas');
check(streamed.choices[0].finish_reason === 'tool_calls', `streamed finish ${streamed.choices[0].finish_reason}`);

// Parallel calls, streamed, through the same helper: each call whole.
const par = await client.beta.chat.completions.stream({
  model: toolModel, messages: messages.slice(0, 1), tools, tool_choice: 'required', temperature: 1, seed: 5, max_tokens: 600, n: 1,
}).finalChatCompletion();
if (par.choices[0].finish_reason === 'tool_calls') {
  for (const c of par.choices[0].message.tool_calls) validCall(c, 'parallel');
}

// 2. Seeded generations at temperature 1, n samples per request: every one
// complete, parsing and valid against its schema.
async function generate(model, extra, each) {
  const n = 10;
  const reqs = [];
  for (let seed = 1; seed * n <= runs; seed++) {
    reqs.push(client.chat.completions.create({
      model, messages: [{ role: 'user', content: 'Go.' }], temperature: 1, seed, n, max_tokens: 350, ...extra,
    }));
  }
  let count = 0;
  for (const r of await Promise.all(reqs)) {
    for (const c of r.choices) {
      each(c, `${model} ${JSON.stringify(extra.tool_choice || extra.response_format.type)} choice`);
      count++;
    }
  }
  check(count >= runs, `${count} generations`);
}

for (const model of models) {
  await generate(model, { tools, tool_choice: 'required', parallel_tool_calls: false }, (c, what) => {
    check(c.finish_reason === 'tool_calls', `${what}: finish ${c.finish_reason} ${JSON.stringify(c.message)}`);
    check(c.message.tool_calls.length === 1, `${what}: parallel_tool_calls false gave ${c.message.tool_calls.length} calls`);
    validCall(c.message.tool_calls[0], what);
  });
  await generate(model, { tools, tool_choice: { type: 'function', function: { name: 'lookup' } } }, (c, what) => {
    check(c.finish_reason === 'tool_calls', `${what}: finish ${c.finish_reason} ${JSON.stringify(c.message)}`);
    check(c.message.tool_calls.length === 1 && c.message.tool_calls[0].function.name === 'lookup', `${what}: ${JSON.stringify(c.message)}`);
    validCall(c.message.tool_calls[0], what);
  });
  await generate(model, { response_format: { type: 'json_schema', json_schema: { name: 'answer', schema: answerSchema, strict: true } } }, (c, what) => {
    check(c.finish_reason === 'stop', `${what}: finish ${c.finish_reason} ${JSON.stringify(c.message.content)}`);
    let v;
    try {
      v = JSON.parse(c.message.content);
    } catch (e) {
      check(false, `${what}: does not parse: ${JSON.stringify(c.message.content)}`);
    }
    check(validateAnswer(v), `${what}: ${c.message.content} fails the schema: ${ajv.errorsText(validateAnswer.errors)}`);
  });
  console.log(`ok: ${runs} generations each of required, named tool and json_schema on ${model}`);
}

// 3. The SDK's structured-output helper with zod.
const Person = z.object({
  name: z.string().max(10),
  age: z.number().int().min(0).max(120),
  pet: z.enum(['cat', 'dog']).nullable(),
  langs: z.array(z.enum(['c', 'go', 'js'])).max(2),
});
const parsed = await client.beta.chat.completions.parse({
  model: toolModel, messages: [{ role: 'user', content: 'Describe a person.' }], response_format: zodResponseFormat(Person, 'person'),
  temperature: 1, seed: 4, max_tokens: 300,
});
const person = parsed.choices[0].message.parsed;
check(person && Person.safeParse(person).success, `zod parse: ${JSON.stringify(parsed.choices[0].message)}`);

// 4. A keyword outside the subset, and a cap: each a 400 that names it.
async function refused(extra, param, needle) {
  try {
    await client.chat.completions.create({ model: toolModel, messages: [{ role: 'user', content: 'x' }], max_tokens: 5, ...extra });
    check(false, `${needle} was accepted`);
  } catch (e) {
    check(e.status === 400 && e.param === param && e.message.includes(needle), `${needle}: ${e.status} ${e.param} ${e.message}`);
  }
}
await refused({ response_format: { type: 'json_schema', json_schema: { name: 'x', schema: { type: 'object', properties: { a: { type: 'string', contentMediaType: 'text/html' } } } } } },
  'response_format.json_schema.schema', '/properties/a/contentMediaType');
await refused({ tools: [{ type: 'function', function: { name: 'f', parameters: { type: 'object', properties: { n: { type: 'integer', multipleOf: 2 } } } } }], tool_choice: 'required' },
  'tools[0].function.parameters', 'multipleOf');
await refused({ response_format: { type: 'json_schema', json_schema: { name: 'x', schema: { type: 'array', maxItems: 1000000 } } } },
  'response_format.json_schema.schema', 'cap');
console.log('ok: tools round trip, streamed tool calls, zod parse, refusals');
