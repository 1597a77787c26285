/* Unit tests for chat templates (runner/api/chat_template.c): the templates
 * that Llama 2, Llama 3, Llama 3.1 and 3.2 (tools), Mistral v0.1, v0.3 and
 * Nemo (tools), Qwen2 (ChatML), Qwen2.5 (tools) and Zephyr ship on Hugging
 * Face, written down verbatim (the newer ones as llama.cpp keeps them in
 * models/templates/, fetched from Hugging Face unchanged), rendered
 * against exact expected strings (the older ones computed by hand, the newer
 * ones taken from Python's jinja2 3.1 and read through, all cross-checked
 * with it under apply_chat_template's settings); the template of
 * $FERRY_TESTDATA/tokenizers/llama2; the ways a model directory carries its
 * template; message normalisation; and, when python3 has jinja2, a live
 * cross-check of every case against it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "common/err.h"
#include "common/fsutil.h"
#include "runner/api/chat_template.h"
#include "runner/api/jinja.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------ the templates */

static const char tmpl_llama2[] =
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set syst"
    "em_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set "
    "system_message = false %}{% endif %}{% for message in loop_messages %}{% if (message['rol"
    "e'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must al"
    "ternate user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and syste"
    "m_message != false %}{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n'"
    " + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if "
    "message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% "
    "elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% en"
    "dif %}{% endfor %}";

static const char tmpl_llama3[] =
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|s"
    "tart_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | tri"
    "m + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% end"
    "if %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assist"
    "ant<|end_header_id|>\\n\\n' }}{% endif %}";

static const char tmpl_mistral01[] =
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.in"
    "dex0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/use"
    "r/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['"
    "content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] +"
    " eos_token}}{% else %}{{ raise_exception('Only user and assistant roles are supported!') "
    "}}{% endif %}{% endfor %}";

static const char tmpl_mistral03[] =
    "{%- if messages[0][\"role\"] == \"system\" %}\n"
    "    {%- set system_message = messages[0][\"content\"] %}\n"
    "    {%- set loop_messages = messages[1:] %}\n"
    "{%- else %}\n"
    "    {%- set loop_messages = messages %}\n"
    "{%- endif %}\n"
    "{%- if not tools is defined %}\n"
    "    {%- set tools = none %}\n"
    "{%- endif %}\n"
    "{%- set user_messages = loop_messages | selectattr(\"role\", \"equalto\", \"user\") | lis"
    "t %}\n"
    "\n"
    "{#- This block checks for alternating user/assistant messages, skipping tool calling mess"
    "ages #}\n"
    "{%- set ns = namespace() %}\n"
    "{%- set ns.index = 0 %}\n"
    "{%- for message in loop_messages %}\n"
    "    {%- if not (message.role == \"tool\" or message.role == \"tool_results\" or (message."
    "tool_calls is defined and message.tool_calls is not none)) %}\n"
    "        {%- if (message[\"role\"] == \"user\") != (ns.index % 2 == 0) %}\n"
    "            {{- raise_exception(\"After the optional system message, conversation roles m"
    "ust alternate user/assistant/user/assistant/...\") }}\n"
    "        {%- endif %}\n"
    "        {%- set ns.index = ns.index + 1 %}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n"
    "\n"
    "{{- bos_token }}\n"
    "{%- for message in loop_messages %}\n"
    "    {%- if message[\"role\"] == \"user\" %}\n"
    "        {%- if tools is not none and (message == user_messages[-1]) %}\n"
    "            {{- \"[AVAILABLE_TOOLS] [\" }}\n"
    "            {%- for tool in tools %}\n"
    "                {%- set tool = tool.function %}\n"
    "                {{- '{\"type\": \"function\", \"function\": {' }}\n"
    "                {%- for key, val in tool.items() if key != \"return\" %}\n"
    "                    {%- if val is string %}\n"
    "                        {{- '\"' + key + '\": \"' + val + '\"' }}\n"
    "                    {%- else %}\n"
    "                        {{- '\"' + key + '\": ' + val|tojson }}\n"
    "                    {%- endif %}\n"
    "                    {%- if not loop.last %}\n"
    "                        {{- \", \" }}\n"
    "                    {%- endif %}\n"
    "                {%- endfor %}\n"
    "                {{- \"}}\" }}\n"
    "                {%- if not loop.last %}\n"
    "                    {{- \", \" }}\n"
    "                {%- else %}\n"
    "                    {{- \"]\" }}\n"
    "                {%- endif %}\n"
    "            {%- endfor %}\n"
    "            {{- \"[/AVAILABLE_TOOLS]\" }}\n"
    "            {%- endif %}\n"
    "        {%- if loop.last and system_message is defined %}\n"
    "            {{- \"[INST] \" + system_message + \"\\n\\n\" + message[\"content\"] + \"[/IN"
    "ST]\" }}\n"
    "        {%- else %}\n"
    "            {{- \"[INST] \" + message[\"content\"] + \"[/INST]\" }}\n"
    "        {%- endif %}\n"
    "    {%- elif message.tool_calls is defined and message.tool_calls is not none %}\n"
    "        {{- \"[TOOL_CALLS] [\" }}\n"
    "        {%- for tool_call in message.tool_calls %}\n"
    "            {%- set out = tool_call.function|tojson %}\n"
    "            {{- out[:-1] }}\n"
    "            {%- if not tool_call.id is defined or tool_call.id|length != 9 %}\n"
    "                {{- raise_exception(\"Tool call IDs should be alphanumeric strings with l"
    "ength 9!\") }}\n"
    "            {%- endif %}\n"
    "            {{- ', \"id\": \"' + tool_call.id + '\"}' }}\n"
    "            {%- if not loop.last %}\n"
    "                {{- \", \" }}\n"
    "            {%- else %}\n"
    "                {{- \"]\" + eos_token }}\n"
    "            {%- endif %}\n"
    "        {%- endfor %}\n"
    "    {%- elif message[\"role\"] == \"assistant\" %}\n"
    "        {{- \" \" + message[\"content\"]|trim + eos_token}}\n"
    "    {%- elif message[\"role\"] == \"tool_results\" or message[\"role\"] == \"tool\" %}\n"
    "        {%- if message.content is defined and message.content.content is defined %}\n"
    "            {%- set content = message.content.content %}\n"
    "        {%- else %}\n"
    "            {%- set content = message.content %}\n"
    "        {%- endif %}\n"
    "        {{- '[TOOL_RESULTS] {\"content\": ' + content|string + \", \" }}\n"
    "        {%- if not message.tool_call_id is defined or message.tool_call_id|length != 9 %}"
    "\n"
    "            {{- raise_exception(\"Tool call IDs should be alphanumeric strings with lengt"
    "h 9!\") }}\n"
    "        {%- endif %}\n"
    "        {{- '\"call_id\": \"' + message.tool_call_id + '\"}[/TOOL_RESULTS]' }}\n"
    "    {%- else %}\n"
    "        {{- raise_exception(\"Only user and assistant roles are supported, with the excep"
    "tion of an initial optional system message!\") }}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n";

static const char tmpl_qwen2[] =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<"
    "|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}{{'<|im_start"
    "|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{%"
    " if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

static const char tmpl_zephyr[] = "{% for message in messages %}\n"
                                  "{% if message['role'] == 'user' %}\n"
                                  "{{ '<|user|>\n"
                                  "' + message['content'] + eos_token }}\n"
                                  "{% elif message['role'] == 'system' %}\n"
                                  "{{ '<|system|>\n"
                                  "' + message['content'] + eos_token }}\n"
                                  "{% elif message['role'] == 'assistant' %}\n"
                                  "{{ '<|assistant|>\n"
                                  "'  + message['content'] + eos_token }}\n"
                                  "{% endif %}\n"
                                  "{% if loop.last and add_generation_prompt %}\n"
                                  "{{ '<|assistant|>' }}\n"
                                  "{% endif %}\n"
                                  "{% endfor %}";

static const char tmpl_qwen25[] =
    "{%- if tools %}\n"
    "    {{- '<|im_start|>system\\n' }}\n"
    "    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- messages[0]['content'] }}\n"
    "    {%- else %}\n"
    "        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}\n"
    "    {%- endif %}\n"
    "    {{- \"\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user q"
    "uery.\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<"
    "tools>\" }}\n"
    "    {%- for tool in tools %}\n"
    "        {{- \"\\n\" }}\n"
    "        {{- tool | tojson }}\n"
    "    {%- endfor %}\n"
    "    {{- \"\\n</tools>\\n\\nFor each function call, return a json object with function nam"
    "e and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\\"name\\\": <"
    "function-name>, \\\"arguments\\\": <args-json-object>}\\n</tool_call><|im_end|>\\n\" }}\n"
    "{%- else %}\n"
    "    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\n"
    "    {%- else %}\n"
    "        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpf"
    "ul assistant.<|im_end|>\\n' }}\n"
    "    {%- endif %}\n"
    "{%- endif %}\n"
    "{%- for message in messages %}\n"
    "    {%- if (message.role == \"user\") or (message.role == \"system\" and not loop.first) "
    "or (message.role == \"assistant\" and not message.tool_calls) %}\n"
    "        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n"
    "' }}\n"
    "    {%- elif message.role == \"assistant\" %}\n"
    "        {{- '<|im_start|>' + message.role }}\n"
    "        {%- if message.content %}\n"
    "            {{- '\\n' + message.content }}\n"
    "        {%- endif %}\n"
    "        {%- for tool_call in message.tool_calls %}\n"
    "            {%- if tool_call.function is defined %}\n"
    "                {%- set tool_call = tool_call.function %}\n"
    "            {%- endif %}\n"
    "            {{- '\\n<tool_call>\\n{\"name\": \"' }}\n"
    "            {{- tool_call.name }}\n"
    "            {{- '\", \"arguments\": ' }}\n"
    "            {{- tool_call.arguments | tojson }}\n"
    "            {{- '}\\n</tool_call>' }}\n"
    "        {%- endfor %}\n"
    "        {{- '<|im_end|>\\n' }}\n"
    "    {%- elif message.role == \"tool\" %}\n"
    "        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != \"tool\") %}\n"
    "            {{- '<|im_start|>user' }}\n"
    "        {%- endif %}\n"
    "        {{- '\\n<tool_response>\\n' }}\n"
    "        {{- message.content }}\n"
    "        {{- '\\n</tool_response>' }}\n"
    "        {%- if loop.last or (messages[loop.index0 + 1].role != \"tool\") %}\n"
    "            {{- '<|im_end|>\\n' }}\n"
    "        {%- endif %}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|im_start|>assistant\\n' }}\n"
    "{%- endif %}\n";

/* Llama 3.1 Instruct (meta-llama/Llama-3.1-8B-Instruct): tools as JSON in the
 * first user message by default, builtin_tools through ipython and <|eom_id|>. */
static const char tmpl_llama31[] =
    "{{- bos_token }}\n"
    "{%- if custom_tools is defined %}\n"
    "    {%- set tools = custom_tools %}\n"
    "{%- endif %}\n"
    "{%- if not tools_in_user_message is defined %}\n"
    "    {%- set tools_in_user_message = true %}\n"
    "{%- endif %}\n"
    "{%- if not date_string is defined %}\n"
    "    {%- set date_string = \"26 Jul 2024\" %}\n"
    "{%- endif %}\n"
    "{%- if not tools is defined %}\n"
    "    {%- set tools = none %}\n"
    "{%- endif %}\n"
    "\n"
    "{#- This block extracts the system message, so we can slot it into the right place. #}\n"
    "{%- if messages[0]['role'] == 'system' %}\n"
    "    {%- set system_message = messages[0]['content']|trim %}\n"
    "    {%- set messages = messages[1:] %}\n"
    "{%- else %}\n"
    "    {%- set system_message = \"\" %}\n"
    "{%- endif %}\n"
    "\n"
    "{#- System message + builtin tools #}\n"
    "{{- \"<|start_header_id|>system<|end_header_id|>\\n\\n\" }}\n"
    "{%- if builtin_tools is defined or tools is not none %}\n"
    "    {{- \"Environment: ipython\\n\" }}\n"
    "{%- endif %}\n"
    "{%- if builtin_tools is defined %}\n"
    "    {{- \"Tools: \" + builtin_tools | reject('equalto', 'code_interpreter') | join(\", \")"
    " + \"\\n\\n\"}}\n"
    "{%- endif %}\n"
    "{{- \"Cutting Knowledge Date: December 2023\\n\" }}\n"
    "{{- \"Today Date: \" + date_string + \"\\n\\n\" }}\n"
    "{%- if tools is not none and not tools_in_user_message %}\n"
    "    {{- \"You have access to the following functions. To call a function, please respond w"
    "ith JSON for a function call.\" }}\n"
    "    {{- 'Respond in the format {\"name\": function name, \"parameters\": dictionary of arg"
    "ument name and its value}.' }}\n"
    "    {{- \"Do not use variables.\\n\\n\" }}\n"
    "    {%- for t in tools %}\n"
    "        {{- t | tojson(indent=4) }}\n"
    "        {{- \"\\n\\n\" }}\n"
    "    {%- endfor %}\n"
    "{%- endif %}\n"
    "{{- system_message }}\n"
    "{{- \"<|eot_id|>\" }}\n"
    "\n"
    "{#- Custom tools are passed in a user message with some extra guidance #}\n"
    "{%- if tools_in_user_message and not tools is none %}\n"
    "    {#- Extract the first user message so we can plug it in here #}\n"
    "    {%- if messages | length != 0 %}\n"
    "        {%- set first_user_message = messages[0]['content']|trim %}\n"
    "        {%- set messages = messages[1:] %}\n"
    "    {%- else %}\n"
    "        {{- raise_exception(\"Cannot put tools in the first user message when there's no f"
    "irst user message!\") }}\n"
    "{%- endif %}\n"
    "    {{- '<|start_header_id|>user<|end_header_id|>\\n\\n' -}}\n"
    "    {{- \"Given the following functions, please respond with a JSON for a function call \""
    " }}\n"
    "    {{- \"with its proper arguments that best answers the given prompt.\\n\\n\" }}\n"
    "    {{- 'Respond in the format {\"name\": function name, \"parameters\": dictionary of arg"
    "ument name and its value}.' }}\n"
    "    {{- \"Do not use variables.\\n\\n\" }}\n"
    "    {%- for t in tools %}\n"
    "        {{- t | tojson(indent=4) }}\n"
    "        {{- \"\\n\\n\" }}\n"
    "    {%- endfor %}\n"
    "    {{- first_user_message + \"<|eot_id|>\"}}\n"
    "{%- endif %}\n"
    "\n"
    "{%- for message in messages %}\n"
    "    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in mes"
    "sage) %}\n"
    "        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['"
    "content'] | trim + '<|eot_id|>' }}\n"
    "    {%- elif 'tool_calls' in message %}\n"
    "        {%- if not message.tool_calls|length == 1 %}\n"
    "            {{- raise_exception(\"This model only supports single tool-calls at once!\") }"
    "}\n"
    "        {%- endif %}\n"
    "        {%- set tool_call = message.tool_calls[0].function %}\n"
    "        {%- if builtin_tools is defined and tool_call.name in builtin_tools %}\n"
    "            {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}\n"
    "            {{- \"<|python_tag|>\" + tool_call.name + \".call(\" }}\n"
    "            {%- for arg_name, arg_val in tool_call.arguments | items %}\n"
    "                {{- arg_name + '=\"' + arg_val + '\"' }}\n"
    "                {%- if not loop.last %}\n"
    "                    {{- \", \" }}\n"
    "                {%- endif %}\n"
    "                {%- endfor %}\n"
    "            {{- \")\" }}\n"
    "        {%- else  %}\n"
    "            {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}\n"
    "            {{- '{\"name\": \"' + tool_call.name + '\", ' }}\n"
    "            {{- '\"parameters\": ' }}\n"
    "            {{- tool_call.arguments | tojson }}\n"
    "            {{- \"}\" }}\n"
    "        {%- endif %}\n"
    "        {%- if builtin_tools is defined %}\n"
    "            {#- This means we're in ipython mode #}\n"
    "            {{- \"<|eom_id|>\" }}\n"
    "        {%- else %}\n"
    "            {{- \"<|eot_id|>\" }}\n"
    "        {%- endif %}\n"
    "    {%- elif message.role == \"tool\" or message.role == \"ipython\" %}\n"
    "        {{- \"<|start_header_id|>ipython<|end_header_id|>\\n\\n\" }}\n"
    "        {%- if message.content is mapping or message.content is iterable %}\n"
    "            {{- message.content | tojson }}\n"
    "        {%- else %}\n"
    "            {{- message.content }}\n"
    "        {%- endif %}\n"
    "        {{- \"<|eot_id|>\" }}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}\n"
    "{%- endif %}\n";

/* Llama 3.2 Instruct (meta-llama/Llama-3.2-3B-Instruct): 3.1 without builtin
 * tools, and today's date through strftime_now when the renderer defines it. */
static const char tmpl_llama32[] =
    "{{- bos_token }}\n"
    "{%- if custom_tools is defined %}\n"
    "    {%- set tools = custom_tools %}\n"
    "{%- endif %}\n"
    "{%- if not tools_in_user_message is defined %}\n"
    "    {%- set tools_in_user_message = true %}\n"
    "{%- endif %}\n"
    "{%- if not date_string is defined %}\n"
    "    {%- if strftime_now is defined %}\n"
    "        {%- set date_string = strftime_now(\"%d %b %Y\") %}\n"
    "    {%- else %}\n"
    "        {%- set date_string = \"26 Jul 2024\" %}\n"
    "    {%- endif %}\n"
    "{%- endif %}\n"
    "{%- if not tools is defined %}\n"
    "    {%- set tools = none %}\n"
    "{%- endif %}\n"
    "\n"
    "{#- This block extracts the system message, so we can slot it into the right place. #}\n"
    "{%- if messages[0]['role'] == 'system' %}\n"
    "    {%- set system_message = messages[0]['content']|trim %}\n"
    "    {%- set messages = messages[1:] %}\n"
    "{%- else %}\n"
    "    {%- set system_message = \"\" %}\n"
    "{%- endif %}\n"
    "\n"
    "{#- System message #}\n"
    "{{- \"<|start_header_id|>system<|end_header_id|>\\n\\n\" }}\n"
    "{%- if tools is not none %}\n"
    "    {{- \"Environment: ipython\\n\" }}\n"
    "{%- endif %}\n"
    "{{- \"Cutting Knowledge Date: December 2023\\n\" }}\n"
    "{{- \"Today Date: \" + date_string + \"\\n\\n\" }}\n"
    "{%- if tools is not none and not tools_in_user_message %}\n"
    "    {{- \"You have access to the following functions. To call a function, please respond w"
    "ith JSON for a function call.\" }}\n"
    "    {{- 'Respond in the format {\"name\": function name, \"parameters\": dictionary of arg"
    "ument name and its value}.' }}\n"
    "    {{- \"Do not use variables.\\n\\n\" }}\n"
    "    {%- for t in tools %}\n"
    "        {{- t | tojson(indent=4) }}\n"
    "        {{- \"\\n\\n\" }}\n"
    "    {%- endfor %}\n"
    "{%- endif %}\n"
    "{{- system_message }}\n"
    "{{- \"<|eot_id|>\" }}\n"
    "\n"
    "{#- Custom tools are passed in a user message with some extra guidance #}\n"
    "{%- if tools_in_user_message and not tools is none %}\n"
    "    {#- Extract the first user message so we can plug it in here #}\n"
    "    {%- if messages | length != 0 %}\n"
    "        {%- set first_user_message = messages[0]['content']|trim %}\n"
    "        {%- set messages = messages[1:] %}\n"
    "    {%- else %}\n"
    "        {{- raise_exception(\"Cannot put tools in the first user message when there's no f"
    "irst user message!\") }}\n"
    "{%- endif %}\n"
    "    {{- '<|start_header_id|>user<|end_header_id|>\\n\\n' -}}\n"
    "    {{- \"Given the following functions, please respond with a JSON for a function call \""
    " }}\n"
    "    {{- \"with its proper arguments that best answers the given prompt.\\n\\n\" }}\n"
    "    {{- 'Respond in the format {\"name\": function name, \"parameters\": dictionary of arg"
    "ument name and its value}.' }}\n"
    "    {{- \"Do not use variables.\\n\\n\" }}\n"
    "    {%- for t in tools %}\n"
    "        {{- t | tojson(indent=4) }}\n"
    "        {{- \"\\n\\n\" }}\n"
    "    {%- endfor %}\n"
    "    {{- first_user_message + \"<|eot_id|>\"}}\n"
    "{%- endif %}\n"
    "\n"
    "{%- for message in messages %}\n"
    "    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in mes"
    "sage) %}\n"
    "        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['"
    "content'] | trim + '<|eot_id|>' }}\n"
    "    {%- elif 'tool_calls' in message %}\n"
    "        {%- if not message.tool_calls|length == 1 %}\n"
    "            {{- raise_exception(\"This model only supports single tool-calls at once!\") }"
    "}\n"
    "        {%- endif %}\n"
    "        {%- set tool_call = message.tool_calls[0].function %}\n"
    "        {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}\n"
    "        {{- '{\"name\": \"' + tool_call.name + '\", ' }}\n"
    "        {{- '\"parameters\": ' }}\n"
    "        {{- tool_call.arguments | tojson }}\n"
    "        {{- \"}\" }}\n"
    "        {{- \"<|eot_id|>\" }}\n"
    "    {%- elif message.role == \"tool\" or message.role == \"ipython\" %}\n"
    "        {{- \"<|start_header_id|>ipython<|end_header_id|>\\n\\n\" }}\n"
    "        {%- if message.content is mapping or message.content is iterable %}\n"
    "            {{- message.content | tojson }}\n"
    "        {%- else %}\n"
    "            {{- message.content }}\n"
    "        {%- endif %}\n"
    "        {{- \"<|eot_id|>\" }}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}\n"
    "{%- endif %}\n";

/* Mistral-Nemo-Instruct-2407: v0.3's tool format without the spaces after
 * [INST], [AVAILABLE_TOOLS], [TOOL_CALLS] and [TOOL_RESULTS], and assistant
 * content untrimmed. */
static const char tmpl_mistral_nemo[] =
    "{%- if messages[0][\"role\"] == \"system\" %}\n"
    "    {%- set system_message = messages[0][\"content\"] %}\n"
    "    {%- set loop_messages = messages[1:] %}\n"
    "{%- else %}\n"
    "    {%- set loop_messages = messages %}\n"
    "{%- endif %}\n"
    "{%- if not tools is defined %}\n"
    "    {%- set tools = none %}\n"
    "{%- endif %}\n"
    "{%- set user_messages = loop_messages | selectattr(\"role\", \"equalto\", \"user\") | list"
    " %}\n"
    "\n"
    "{#- This block checks for alternating user/assistant messages, skipping tool calling messa"
    "ges #}\n"
    "{%- set ns = namespace() %}\n"
    "{%- set ns.index = 0 %}\n"
    "{%- for message in loop_messages %}\n"
    "    {%- if not (message.role == \"tool\" or message.role == \"tool_results\" or (message.t"
    "ool_calls is defined and message.tool_calls is not none)) %}\n"
    "        {%- if (message[\"role\"] == \"user\") != (ns.index % 2 == 0) %}\n"
    "            {{- raise_exception(\"After the optional system message, conversation roles mu"
    "st alternate user/assistant/user/assistant/...\") }}\n"
    "        {%- endif %}\n"
    "        {%- set ns.index = ns.index + 1 %}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n"
    "\n"
    "{{- bos_token }}\n"
    "{%- for message in loop_messages %}\n"
    "    {%- if message[\"role\"] == \"user\" %}\n"
    "        {%- if tools is not none and (message == user_messages[-1]) %}\n"
    "            {{- \"[AVAILABLE_TOOLS][\" }}\n"
    "            {%- for tool in tools %}\n"
    "                {%- set tool = tool.function %}\n"
    "                {{- '{\"type\": \"function\", \"function\": {' }}\n"
    "                {%- for key, val in tool.items() if key != \"return\" %}\n"
    "                    {%- if val is string %}\n"
    "                        {{- '\"' + key + '\": \"' + val + '\"' }}\n"
    "                    {%- else %}\n"
    "                        {{- '\"' + key + '\": ' + val|tojson }}\n"
    "                    {%- endif %}\n"
    "                    {%- if not loop.last %}\n"
    "                        {{- \", \" }}\n"
    "                    {%- endif %}\n"
    "                {%- endfor %}\n"
    "                {{- \"}}\" }}\n"
    "                {%- if not loop.last %}\n"
    "                    {{- \", \" }}\n"
    "                {%- else %}\n"
    "                    {{- \"]\" }}\n"
    "                {%- endif %}\n"
    "            {%- endfor %}\n"
    "            {{- \"[/AVAILABLE_TOOLS]\" }}\n"
    "            {%- endif %}\n"
    "        {%- if loop.last and system_message is defined %}\n"
    "            {{- \"[INST]\" + system_message + \"\\n\\n\" + message[\"content\"] + \"[/INST"
    "]\" }}\n"
    "        {%- else %}\n"
    "            {{- \"[INST]\" + message[\"content\"] + \"[/INST]\" }}\n"
    "        {%- endif %}\n"
    "    {%- elif (message.tool_calls is defined and message.tool_calls is not none) %}\n"
    "        {{- \"[TOOL_CALLS][\" }}\n"
    "        {%- for tool_call in message.tool_calls %}\n"
    "            {%- set out = tool_call.function|tojson %}\n"
    "            {{- out[:-1] }}\n"
    "            {%- if not tool_call.id is defined or tool_call.id|length != 9 %}\n"
    "                {{- raise_exception(\"Tool call IDs should be alphanumeric strings with le"
    "ngth 9!\") }}\n"
    "            {%- endif %}\n"
    "            {{- ', \"id\": \"' + tool_call.id + '\"}' }}\n"
    "            {%- if not loop.last %}\n"
    "                {{- \", \" }}\n"
    "            {%- else %}\n"
    "                {{- \"]\" + eos_token }}\n"
    "            {%- endif %}\n"
    "        {%- endfor %}\n"
    "    {%- elif message[\"role\"] == \"assistant\" %}\n"
    "        {{- message[\"content\"] + eos_token}}\n"
    "    {%- elif message[\"role\"] == \"tool_results\" or message[\"role\"] == \"tool\" %}\n"
    "        {%- if message.content is defined and message.content.content is defined %}\n"
    "            {%- set content = message.content.content %}\n"
    "        {%- else %}\n"
    "            {%- set content = message.content %}\n"
    "        {%- endif %}\n"
    "        {{- '[TOOL_RESULTS]{\"content\": ' + content|string + \", \" }}\n"
    "        {%- if not message.tool_call_id is defined or message.tool_call_id|length != 9 %}"
    "\n"
    "            {{- raise_exception(\"Tool call IDs should be alphanumeric strings with length"
    " 9!\") }}\n"
    "        {%- endif %}\n"
    "        {{- '\"call_id\": \"' + message.tool_call_id + '\"}[/TOOL_RESULTS]' }}\n"
    "    {%- else %}\n"
    "        {{- raise_exception(\"Only user and assistant roles are supported, with the except"
    "ion of an initial optional system message!\") }}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n";

#define CONV_SINGLE "[{\"role\": \"user\", \"content\": \" Hi there! \"}]"
#define CONV_MULTI                                                                                 \
    "[{\"role\": \"user\", \"content\": \" Hi there! \"}, {\"role\": \"assistant\", \"content\": " \
    "\"Hello. \"}, {\"role\": \"user\", \"content\": \"What is 2+2?\"}]"
#define CONV_SYSTEM                                                                                \
    "[{\"role\": \"system\", \"content\": \"You are terse.\"}, {\"role\": \"user\", \"content\": " \
    "\" Hi there! \"}, {\"role\": \"assistant\", \"content\": \"Hello. \"}, {\"role\": \"user\", " \
    "\"content\": \"What is 2+2?\"}]"
#define CONV_BAD_ALTERNATION                                                                  \
    "[{\"role\": \"user\", \"content\": \" Hi there! \"}, {\"role\": \"user\", \"content\": " \
    "\"What is 2+2?\"}]"
#define CONV_TOOLS                                                                             \
    "[{\"role\": \"user\", \"content\": \"What is 2+2?\"}, {\"role\": \"assistant\", "         \
    "\"content\": null, \"tool_calls\": [{\"id\": \"abcdefghi\", \"type\": \"function\", "     \
    "\"function\": {\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}}]}, "     \
    "{\"role\": \"tool\", \"tool_call_id\": \"abcdefghi\", \"content\": \"22C\"}, {\"role\": " \
    "\"assistant\", \"content\": \"It is 22C.\"}, {\"role\": \"user\", \"content\": \"Thanks\"}]"
/* Two calls in one assistant turn, answered by two tool messages. */
#define CONV_PARALLEL                                                                      \
    "[{\"role\": \"user\", \"content\": \"Paris or Rome?\"}, {\"role\": \"assistant\", "   \
    "\"content\": null, \"tool_calls\": [{\"id\": \"abcdefghi\", \"type\": \"function\", " \
    "\"function\": {\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}}, "   \
    "{\"id\": \"jklmnopqr\", \"type\": \"function\", \"function\": {\"name\": "            \
    "\"get_weather\", \"arguments\": {\"city\": \"Rome\"}}}]}, {\"role\": \"tool\", "      \
    "\"tool_call_id\": \"abcdefghi\", \"content\": \"22C\"}, {\"role\": \"tool\", "        \
    "\"tool_call_id\": \"jklmnopqr\", \"content\": \"25C\"}, {\"role\": \"assistant\", "   \
    "\"content\": \"Rome, at 25C.\"}]"
/* A tool call whose id Mistral's templates refuse (not 9 characters). */
#define CONV_BAD_ID                                                                           \
    "[{\"role\": \"user\", \"content\": \"Paris?\"}, {\"role\": \"assistant\", \"content\": " \
    "null, \"tool_calls\": [{\"id\": \"call_1\", \"type\": \"function\", \"function\": "      \
    "{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}}]}]"
#define TOOLS_JSON                                                                                 \
    "[{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"description\": \"Get "  \
    "the weather\", \"parameters\": {\"type\": \"object\", \"properties\": {\"city\": {\"type\": " \
    "\"string\"}}, \"required\": [\"city\"]}}}]"

/* Llama 3.1's builtin tools: a call of one (brave_search) and its ipython result. */
#define CONV_BUILTIN                                                                               \
    "[{\"role\": \"system\", \"content\": \"Be brief.\"}, {\"role\": \"user\", \"content\": "      \
    "\"Weather in Paris?\"}, {\"role\": \"assistant\", \"content\": null, \"tool_calls\": "        \
    "[{\"id\": \"abcdefghi\", \"type\": \"function\", \"function\": {\"name\": \"brave_search\", " \
    "\"arguments\": {\"query\": \"weather Paris\"}}}]}, {\"role\": \"ipython\", \"content\": "     \
    "\"Sunny, 22C\"}]"
/* Tools whose JSON is awkward to indent: non-ASCII text, empty containers,
 * numbers, booleans and null. */
#define TOOLS_AWKWARD                                                                               \
    "[{\"type\": \"function\", \"function\": {\"name\": \"météo\", \"description\": \"Temps — " \
    "天気 \\\"now\\\"\\n\", \"parameters\": {\"type\": \"object\", \"properties\": {}, "          \
    "\"required\": [], \"x\": [1, 1.5, -2e-07, true, false, null, {}, [[]]]}}}]"
#define SPECIAL_TOKENS "\"bos_token\": \"<s>\", \"eos_token\": \"</s>\""

/* Stands in an expected string for today's date (Llama 3.2 calls strftime_now). */
#define TODAY_MARK "@TODAY@"

struct family_case {
    const char *family;
    const char *tmpl;
    const char *messages;
    int add_generation_prompt;
    const char *want;     /* NULL: rendering must fail */
    const char *want_err; /* the raise_exception message ("" any error) */
    const char *tools;    /* the request's tools as JSON, NULL: none */
};

static const struct family_case family_cases[] = {
    {"llama2", tmpl_llama2, CONV_SINGLE, 0, "<s>[INST] Hi there! [/INST]", NULL, NULL},
    {"llama2", tmpl_llama2, CONV_SINGLE, 1, "<s>[INST] Hi there! [/INST]", NULL, NULL},
    {"llama2", tmpl_llama2, CONV_MULTI, 0,
     "<s>[INST] Hi there! [/INST] Hello. </s><s>[INST] What is 2+2? [/INST]", NULL, NULL},
    {"llama2", tmpl_llama2, CONV_MULTI, 1,
     "<s>[INST] Hi there! [/INST] Hello. </s><s>[INST] What is 2+2? [/INST]", NULL, NULL},
    {"llama2", tmpl_llama2, CONV_SYSTEM, 0,
     "<s>[INST] <<SYS>>\n"
     "You are terse.\n"
     "<</SYS>>\n"
     "\n"
     " Hi there! [/INST] Hello. </s><s>[INST] What is 2+2? [/INST]",
     NULL, NULL},
    {"llama2", tmpl_llama2, CONV_SYSTEM, 1,
     "<s>[INST] <<SYS>>\n"
     "You are terse.\n"
     "<</SYS>>\n"
     "\n"
     " Hi there! [/INST] Hello. </s><s>[INST] What is 2+2? [/INST]",
     NULL, NULL},
    {"llama2", tmpl_llama2, CONV_BAD_ALTERNATION, 0, NULL,
     "Conversation roles must alternate user/assistant/user/assistant/...", NULL},
    {"llama2", tmpl_llama2, CONV_BAD_ALTERNATION, 1, NULL,
     "Conversation roles must alternate user/assistant/user/assistant/...", NULL},
    {"llama2", tmpl_llama2, CONV_TOOLS, 1, NULL, "",
     TOOLS_JSON}, /* 'None' has no attribute 'strip' */
    {"llama3", tmpl_llama3, CONV_SINGLE, 0,
     "<s><|start_header_id|>user<|end_header_id|>\n"
     "\n"
     "Hi there!<|eot_id|>",
     NULL, NULL},
    {"llama3", tmpl_llama3, CONV_SINGLE, 1,
     "<s><|start_header_id|>user<|end_header_id|>\n"
     "\n"
     "Hi there!<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n"
     "\n",
     NULL, NULL},
    {"llama3", tmpl_llama3, CONV_MULTI, 0,
     "<s><|start_header_id|>user<|end_header_id|>\n"
     "\n"
     "Hi there!<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n"
     "\n"
     "Hello.<|eot_id|><|start_header_id|>user<|end_header_id|>\n"
     "\n"
     "What is 2+2?<|eot_id|>",
     NULL, NULL},
    {"llama3", tmpl_llama3, CONV_MULTI, 1,
     "<s><|start_header_id|>user<|end_header_id|>\n"
     "\n"
     "Hi there!<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n"
     "\n"
     "Hello.<|eot_id|><|start_header_id|>user<|end_header_id|>\n"
     "\n"
     "What is 2+2?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n"
     "\n",
     NULL, NULL},
    {"llama3", tmpl_llama3, CONV_SYSTEM, 0,
     "<s><|start_header_id|>system<|end_header_id|>\n"
     "\n"
     "You are terse.<|eot_id|><|start_header_id|>user<|end_header_id|>\n"
     "\n"
     "Hi there!<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n"
     "\n"
     "Hello.<|eot_id|><|start_header_id|>user<|end_header_id|>\n"
     "\n"
     "What is 2+2?<|eot_id|>",
     NULL, NULL},
    {"llama3", tmpl_llama3, CONV_SYSTEM, 1,
     "<s><|start_header_id|>system<|end_header_id|>\n"
     "\n"
     "You are terse.<|eot_id|><|start_header_id|>user<|end_header_id|>\n"
     "\n"
     "Hi there!<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n"
     "\n"
     "Hello.<|eot_id|><|start_header_id|>user<|end_header_id|>\n"
     "\n"
     "What is 2+2?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n"
     "\n",
     NULL, NULL},
    {"llama3", tmpl_llama3, CONV_BAD_ALTERNATION, 0,
     "<s><|start_header_id|>user<|end_header_id|>\n"
     "\n"
     "Hi there!<|eot_id|><|start_header_id|>user<|end_header_id|>\n"
     "\n"
     "What is 2+2?<|eot_id|>",
     NULL, NULL},
    {"llama3", tmpl_llama3, CONV_BAD_ALTERNATION, 1,
     "<s><|start_header_id|>user<|end_header_id|>\n"
     "\n"
     "Hi there!<|eot_id|><|start_header_id|>user<|end_header_id|>\n"
     "\n"
     "What is 2+2?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n"
     "\n",
     NULL, NULL},
    {"llama3", tmpl_llama3, CONV_TOOLS, 1,
     "<s><|start_header_id|>user<|end_header_id|>\n"
     "\n"
     "What is 2+2?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n"
     "\n"
     "None<|eot_id|><|start_header_id|>tool<|end_header_id|>\n"
     "\n"
     "22C<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n"
     "\n"
     "It is 22C.<|eot_id|><|start_header_id|>user<|end_header_id|>\n"
     "\n"
     "Thanks<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n"
     "\n",
     NULL, TOOLS_JSON},
    {"mistral01", tmpl_mistral01, CONV_SINGLE, 0, "<s>[INST]  Hi there!  [/INST]", NULL, NULL},
    {"mistral01", tmpl_mistral01, CONV_SINGLE, 1, "<s>[INST]  Hi there!  [/INST]", NULL, NULL},
    {"mistral01", tmpl_mistral01, CONV_MULTI, 0,
     "<s>[INST]  Hi there!  [/INST]Hello. </s>[INST] What is 2+2? [/INST]", NULL, NULL},
    {"mistral01", tmpl_mistral01, CONV_MULTI, 1,
     "<s>[INST]  Hi there!  [/INST]Hello. </s>[INST] What is 2+2? [/INST]", NULL, NULL},
    {"mistral01", tmpl_mistral01, CONV_SYSTEM, 0, NULL,
     "Conversation roles must alternate user/assistant/user/assistant/...", NULL},
    {"mistral01", tmpl_mistral01, CONV_SYSTEM, 1, NULL,
     "Conversation roles must alternate user/assistant/user/assistant/...", NULL},
    {"mistral01", tmpl_mistral01, CONV_BAD_ALTERNATION, 0, NULL,
     "Conversation roles must alternate user/assistant/user/assistant/...", NULL},
    {"mistral01", tmpl_mistral01, CONV_BAD_ALTERNATION, 1, NULL,
     "Conversation roles must alternate user/assistant/user/assistant/...", NULL},
    {"mistral01", tmpl_mistral01, CONV_TOOLS, 1, NULL, "",
     TOOLS_JSON}, /* unsupported operand type(s) for +: 'NoneType' and 'str' */
    {"mistral03", tmpl_mistral03, CONV_SINGLE, 0, "<s>[INST]  Hi there! [/INST]", NULL, NULL},
    {"mistral03", tmpl_mistral03, CONV_SINGLE, 1, "<s>[INST]  Hi there! [/INST]", NULL, NULL},
    {"mistral03", tmpl_mistral03, CONV_MULTI, 0,
     "<s>[INST]  Hi there! [/INST] Hello.</s>[INST] What is 2+2?[/INST]", NULL, NULL},
    {"mistral03", tmpl_mistral03, CONV_MULTI, 1,
     "<s>[INST]  Hi there! [/INST] Hello.</s>[INST] What is 2+2?[/INST]", NULL, NULL},
    {"mistral03", tmpl_mistral03, CONV_SYSTEM, 0,
     "<s>[INST]  Hi there! [/INST] Hello.</s>[INST] You are terse.\n"
     "\n"
     "What is 2+2?[/INST]",
     NULL, NULL},
    {"mistral03", tmpl_mistral03, CONV_SYSTEM, 1,
     "<s>[INST]  Hi there! [/INST] Hello.</s>[INST] You are terse.\n"
     "\n"
     "What is 2+2?[/INST]",
     NULL, NULL},
    {"mistral03", tmpl_mistral03, CONV_BAD_ALTERNATION, 0, NULL,
     "After the optional system message, conversation roles must alternate user/assistant/user/"
     "assistant/...",
     NULL},
    {"mistral03", tmpl_mistral03, CONV_BAD_ALTERNATION, 1, NULL,
     "After the optional system message, conversation roles must alternate user/assistant/user/"
     "assistant/...",
     NULL},
    {"mistral03", tmpl_mistral03, CONV_TOOLS, 1,
     "<s>[INST] What is 2+2?[/INST][TOOL_CALLS] [{\"name\": \"get_weather\", \"arguments\": {\""
     "city\": \"Paris\"}, \"id\": \"abcdefghi\"}]</s>[TOOL_RESULTS] {\"content\": 22C, \"call_i"
     "d\": \"abcdefghi\"}[/TOOL_RESULTS] It is 22C.</s>[AVAILABLE_TOOLS] [{\"type\": \"function"
     "\", \"function\": {\"name\": \"get_weather\", \"description\": \"Get the weather\", \"par"
     "ameters\": {\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\"}}, \"r"
     "equired\": [\"city\"]}}}][/AVAILABLE_TOOLS][INST] Thanks[/INST]",
     NULL, TOOLS_JSON},
    {"qwen2", tmpl_qwen2, CONV_SINGLE, 0,
     "<|im_start|>system\n"
     "You are a helpful assistant.<|im_end|>\n"
     "<|im_start|>user\n"
     " Hi there! <|im_end|>\n",
     NULL, NULL},
    {"qwen2", tmpl_qwen2, CONV_SINGLE, 1,
     "<|im_start|>system\n"
     "You are a helpful assistant.<|im_end|>\n"
     "<|im_start|>user\n"
     " Hi there! <|im_end|>\n"
     "<|im_start|>assistant\n",
     NULL, NULL},
    {"qwen2", tmpl_qwen2, CONV_MULTI, 0,
     "<|im_start|>system\n"
     "You are a helpful assistant.<|im_end|>\n"
     "<|im_start|>user\n"
     " Hi there! <|im_end|>\n"
     "<|im_start|>assistant\n"
     "Hello. <|im_end|>\n"
     "<|im_start|>user\n"
     "What is 2+2?<|im_end|>\n",
     NULL, NULL},
    {"qwen2", tmpl_qwen2, CONV_MULTI, 1,
     "<|im_start|>system\n"
     "You are a helpful assistant.<|im_end|>\n"
     "<|im_start|>user\n"
     " Hi there! <|im_end|>\n"
     "<|im_start|>assistant\n"
     "Hello. <|im_end|>\n"
     "<|im_start|>user\n"
     "What is 2+2?<|im_end|>\n"
     "<|im_start|>assistant\n",
     NULL, NULL},
    {"qwen2", tmpl_qwen2, CONV_SYSTEM, 0,
     "<|im_start|>system\n"
     "You are terse.<|im_end|>\n"
     "<|im_start|>user\n"
     " Hi there! <|im_end|>\n"
     "<|im_start|>assistant\n"
     "Hello. <|im_end|>\n"
     "<|im_start|>user\n"
     "What is 2+2?<|im_end|>\n",
     NULL, NULL},
    {"qwen2", tmpl_qwen2, CONV_SYSTEM, 1,
     "<|im_start|>system\n"
     "You are terse.<|im_end|>\n"
     "<|im_start|>user\n"
     " Hi there! <|im_end|>\n"
     "<|im_start|>assistant\n"
     "Hello. <|im_end|>\n"
     "<|im_start|>user\n"
     "What is 2+2?<|im_end|>\n"
     "<|im_start|>assistant\n",
     NULL, NULL},
    {"qwen2", tmpl_qwen2, CONV_BAD_ALTERNATION, 0,
     "<|im_start|>system\n"
     "You are a helpful assistant.<|im_end|>\n"
     "<|im_start|>user\n"
     " Hi there! <|im_end|>\n"
     "<|im_start|>user\n"
     "What is 2+2?<|im_end|>\n",
     NULL, NULL},
    {"qwen2", tmpl_qwen2, CONV_BAD_ALTERNATION, 1,
     "<|im_start|>system\n"
     "You are a helpful assistant.<|im_end|>\n"
     "<|im_start|>user\n"
     " Hi there! <|im_end|>\n"
     "<|im_start|>user\n"
     "What is 2+2?<|im_end|>\n"
     "<|im_start|>assistant\n",
     NULL, NULL},
    {"qwen2", tmpl_qwen2, CONV_TOOLS, 1, NULL, "",
     TOOLS_JSON}, /* can only concatenate str (not "NoneType") to str */
    {"zephyr", tmpl_zephyr, CONV_SINGLE, 0,
     "<|user|>\n"
     " Hi there! </s>\n",
     NULL, NULL},
    {"zephyr", tmpl_zephyr, CONV_SINGLE, 1,
     "<|user|>\n"
     " Hi there! </s>\n"
     "<|assistant|>\n",
     NULL, NULL},
    {"zephyr", tmpl_zephyr, CONV_MULTI, 0,
     "<|user|>\n"
     " Hi there! </s>\n"
     "<|assistant|>\n"
     "Hello. </s>\n"
     "<|user|>\n"
     "What is 2+2?</s>\n",
     NULL, NULL},
    {"zephyr", tmpl_zephyr, CONV_MULTI, 1,
     "<|user|>\n"
     " Hi there! </s>\n"
     "<|assistant|>\n"
     "Hello. </s>\n"
     "<|user|>\n"
     "What is 2+2?</s>\n"
     "<|assistant|>\n",
     NULL, NULL},
    {"zephyr", tmpl_zephyr, CONV_SYSTEM, 0,
     "<|system|>\n"
     "You are terse.</s>\n"
     "<|user|>\n"
     " Hi there! </s>\n"
     "<|assistant|>\n"
     "Hello. </s>\n"
     "<|user|>\n"
     "What is 2+2?</s>\n",
     NULL, NULL},
    {"zephyr", tmpl_zephyr, CONV_SYSTEM, 1,
     "<|system|>\n"
     "You are terse.</s>\n"
     "<|user|>\n"
     " Hi there! </s>\n"
     "<|assistant|>\n"
     "Hello. </s>\n"
     "<|user|>\n"
     "What is 2+2?</s>\n"
     "<|assistant|>\n",
     NULL, NULL},
    {"zephyr", tmpl_zephyr, CONV_BAD_ALTERNATION, 0,
     "<|user|>\n"
     " Hi there! </s>\n"
     "<|user|>\n"
     "What is 2+2?</s>\n",
     NULL, NULL},
    {"zephyr", tmpl_zephyr, CONV_BAD_ALTERNATION, 1,
     "<|user|>\n"
     " Hi there! </s>\n"
     "<|user|>\n"
     "What is 2+2?</s>\n"
     "<|assistant|>\n",
     NULL, NULL},
    {"zephyr", tmpl_zephyr, CONV_TOOLS, 1, NULL, "",
     TOOLS_JSON}, /* can only concatenate str (not "NoneType") to str */
    {"qwen25", tmpl_qwen25, CONV_SINGLE, 0,
     "<|im_start|>system\n"
     "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
     "<|im_start|>user\n"
     " Hi there! <|im_end|>\n",
     NULL, NULL},
    {"qwen25", tmpl_qwen25, CONV_SINGLE, 1,
     "<|im_start|>system\n"
     "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
     "<|im_start|>user\n"
     " Hi there! <|im_end|>\n"
     "<|im_start|>assistant\n",
     NULL, NULL},
    {"qwen25", tmpl_qwen25, CONV_MULTI, 0,
     "<|im_start|>system\n"
     "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
     "<|im_start|>user\n"
     " Hi there! <|im_end|>\n"
     "<|im_start|>assistant\n"
     "Hello. <|im_end|>\n"
     "<|im_start|>user\n"
     "What is 2+2?<|im_end|>\n",
     NULL, NULL},
    {"qwen25", tmpl_qwen25, CONV_MULTI, 1,
     "<|im_start|>system\n"
     "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
     "<|im_start|>user\n"
     " Hi there! <|im_end|>\n"
     "<|im_start|>assistant\n"
     "Hello. <|im_end|>\n"
     "<|im_start|>user\n"
     "What is 2+2?<|im_end|>\n"
     "<|im_start|>assistant\n",
     NULL, NULL},
    {"qwen25", tmpl_qwen25, CONV_SYSTEM, 0,
     "<|im_start|>system\n"
     "You are terse.<|im_end|>\n"
     "<|im_start|>user\n"
     " Hi there! <|im_end|>\n"
     "<|im_start|>assistant\n"
     "Hello. <|im_end|>\n"
     "<|im_start|>user\n"
     "What is 2+2?<|im_end|>\n",
     NULL, NULL},
    {"qwen25", tmpl_qwen25, CONV_SYSTEM, 1,
     "<|im_start|>system\n"
     "You are terse.<|im_end|>\n"
     "<|im_start|>user\n"
     " Hi there! <|im_end|>\n"
     "<|im_start|>assistant\n"
     "Hello. <|im_end|>\n"
     "<|im_start|>user\n"
     "What is 2+2?<|im_end|>\n"
     "<|im_start|>assistant\n",
     NULL, NULL},
    {"qwen25", tmpl_qwen25, CONV_BAD_ALTERNATION, 0,
     "<|im_start|>system\n"
     "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
     "<|im_start|>user\n"
     " Hi there! <|im_end|>\n"
     "<|im_start|>user\n"
     "What is 2+2?<|im_end|>\n",
     NULL, NULL},
    {"qwen25", tmpl_qwen25, CONV_BAD_ALTERNATION, 1,
     "<|im_start|>system\n"
     "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
     "<|im_start|>user\n"
     " Hi there! <|im_end|>\n"
     "<|im_start|>user\n"
     "What is 2+2?<|im_end|>\n"
     "<|im_start|>assistant\n",
     NULL, NULL},
    {"qwen25", tmpl_qwen25, CONV_TOOLS, 1,
     "<|im_start|>system\n"
     "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.\n"
     "\n"
     "# Tools\n"
     "\n"
     "You may call one or more functions to assist with the user query.\n"
     "\n"
     "You are provided with function signatures within <tools></tools> XML tags:\n"
     "<tools>\n"
     "{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"description\": \"Get"
     " the weather\", \"parameters\": {\"type\": \"object\", \"properties\": {\"city\": {\"type"
     "\": \"string\"}}, \"required\": [\"city\"]}}}\n"
     "</tools>\n"
     "\n"
     "For each function call, return a json object with function name and arguments within <too"
     "l_call></tool_call> XML tags:\n"
     "<tool_call>\n"
     "{\"name\": <function-name>, \"arguments\": <args-json-object>}\n"
     "</tool_call><|im_end|>\n"
     "<|im_start|>user\n"
     "What is 2+2?<|im_end|>\n"
     "<|im_start|>assistant\n"
     "<tool_call>\n"
     "{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n"
     "</tool_call><|im_end|>\n"
     "<|im_start|>user\n"
     "<tool_response>\n"
     "22C\n"
     "</tool_response><|im_end|>\n"
     "<|im_start|>assistant\n"
     "It is 22C.<|im_end|>\n"
     "<|im_start|>user\n"
     "Thanks<|im_end|>\n"
     "<|im_start|>assistant\n",
     NULL, TOOLS_JSON},
    {"llama31", tmpl_llama31, CONV_SINGLE, 0,
     "<s><|start_header_id|>system<|end_header_id|>\n"
     "\n"
     "Cutting Knowledge Date: December 2023\n"
     "Today Date: 26 Jul 2024\n"
     "\n"
     "<|eot_id|><|start_header_id|>user<|end_header_id|>\n"
     "\n"
     "Hi there!<|eot_id|>",
     NULL, NULL},
    {"llama31", tmpl_llama31, CONV_SINGLE, 1,
     "<s><|start_header_id|>system<|end_header_id|>\n"
     "\n"
     "Cutting Knowledge Date: December 2023\n"
     "Today Date: 26 Jul 2024\n"
     "\n"
     "<|eot_id|><|start_header_id|>user<|end_header_id|>\n"
     "\n"
     "Hi there!<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n"
     "\n",
     NULL, NULL},
    {"llama31", tmpl_llama31, CONV_SYSTEM, 0,
     "<s><|start_header_id|>system<|end_header_id|>\n"
     "\n"
     "Cutting Knowledge Date: December 2023\n"
     "Today Date: 26 Jul 2024\n"
     "\n"
     "You are terse.<|eot_id|><|start_header_id|>user<|end_header_id|>\n"
     "\n"
     "Hi there!<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n"
     "\n"
     "Hello.<|eot_id|><|start_header_id|>user<|end_header_id|>\n"
     "\n"
     "What is 2+2?<|eot_id|>",
     NULL, NULL},
    {"llama31", tmpl_llama31, CONV_SYSTEM, 1,
     "<s><|start_header_id|>system<|end_header_id|>\n"
     "\n"
     "Cutting Knowledge Date: December 2023\n"
     "Today Date: 26 Jul 2024\n"
     "\n"
     "You are terse.<|eot_id|><|start_header_id|>user<|end_header_id|>\n"
     "\n"
     "Hi there!<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n"
     "\n"
     "Hello.<|eot_id|><|start_header_id|>user<|end_header_id|>\n"
     "\n"
     "What is 2+2?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n"
     "\n",
     NULL, NULL},
    {"llama31", tmpl_llama31, CONV_SINGLE, 0,
     "<s><|start_header_id|>system<|end_header_id|>\n"
     "\n"
     "Environment: ipython\n"
     "Cutting Knowledge Date: December 2023\n"
     "Today Date: 26 Jul 2024\n"
     "\n"
     "<|eot_id|><|start_header_id|>user<|end_header_id|>\n"
     "\n"
     "Given the following functions, please respond with a JSON for a function call with its p"
     "roper arguments that best answers the given prompt.\n"
     "\n"
     "Respond in the format {\"name\": function name, \"parameters\": dictionary of argument n"
     "ame and its value}.Do not use variables.\n"
     "\n"
     "{\n"
     "    \"type\": \"function\",\n"
     "    \"function\": {\n"
     "        \"name\": \"get_weather\",\n"
     "        \"description\": \"Get the weather\",\n"
     "        \"parameters\": {\n"
     "            \"type\": \"object\",\n"
     "            \"properties\": {\n"
     "                \"city\": {\n"
     "                    \"type\": \"string\"\n"
     "                }\n"
     "            },\n"
     "            \"required\": [\n"
     "                \"city\"\n"
     "            ]\n"
     "        }\n"
     "    }\n"
     "}\n"
     "\n"
     "Hi there!<|eot_id|>",
     NULL, TOOLS_JSON},
    {"llama31", tmpl_llama31, CONV_SINGLE, 1,
     "<s><|start_header_id|>system<|end_header_id|>\n"
     "\n"
     "Environment: ipython\n"
     "Cutting Knowledge Date: December 2023\n"
     "Today Date: 26 Jul 2024\n"
     "\n"
     "<|eot_id|><|start_header_id|>user<|end_header_id|>\n"
     "\n"
     "Given the following functions, please respond with a JSON for a function call with its p"
     "roper arguments that best answers the given prompt.\n"
     "\n"
     "Respond in the format {\"name\": function name, \"parameters\": dictionary of argument n"
     "ame and its value}.Do not use variables.\n"
     "\n"
     "{\n"
     "    \"type\": \"function\",\n"
     "    \"function\": {\n"
     "        \"name\": \"get_weather\",\n"
     "        \"description\": \"Get the weather\",\n"
     "        \"parameters\": {\n"
     "            \"type\": \"object\",\n"
     "            \"properties\": {\n"
     "                \"city\": {\n"
     "                    \"type\": \"string\"\n"
     "                }\n"
     "            },\n"
     "            \"required\": [\n"
     "                \"city\"\n"
     "            ]\n"
     "        }\n"
     "    }\n"
     "}\n"
     "\n"
     "Hi there!<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n"
     "\n",
     NULL, TOOLS_JSON},
    {"llama31", tmpl_llama31, CONV_SYSTEM, 1,
     "<s><|start_header_id|>system<|end_header_id|>\n"
     "\n"
     "Environment: ipython\n"
     "Cutting Knowledge Date: December 2023\n"
     "Today Date: 26 Jul 2024\n"
     "\n"
     "You are terse.<|eot_id|><|start_header_id|>user<|end_header_id|>\n"
     "\n"
     "Given the following functions, please respond with a JSON for a function call with its p"
     "roper arguments that best answers the given prompt.\n"
     "\n"
     "Respond in the format {\"name\": function name, \"parameters\": dictionary of argument n"
     "ame and its value}.Do not use variables.\n"
     "\n"
     "{\n"
     "    \"type\": \"function\",\n"
     "    \"function\": {\n"
     "        \"name\": \"get_weather\",\n"
     "        \"description\": \"Get the weather\",\n"
     "        \"parameters\": {\n"
     "            \"type\": \"object\",\n"
     "            \"properties\": {\n"
     "                \"city\": {\n"
     "                    \"type\": \"string\"\n"
     "                }\n"
     "            },\n"
     "            \"required\": [\n"
     "                \"city\"\n"
     "            ]\n"
     "        }\n"
     "    }\n"
     "}\n"
     "\n"
     "Hi there!<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n"
     "\n"
     "Hello.<|eot_id|><|start_header_id|>user<|end_header_id|>\n"
     "\n"
     "What is 2+2?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n"
     "\n",
     NULL, TOOLS_JSON},
    {"llama31", tmpl_llama31, CONV_TOOLS, 0,
     "<s><|start_header_id|>system<|end_header_id|>\n"
     "\n"
     "Environment: ipython\n"
     "Cutting Knowledge Date: December 2023\n"
     "Today Date: 26 Jul 2024\n"
     "\n"
     "<|eot_id|><|start_header_id|>user<|end_header_id|>\n"
     "\n"
     "Given the following functions, please respond with a JSON for a function call with its p"
     "roper arguments that best answers the given prompt.\n"
     "\n"
     "Respond in the format {\"name\": function name, \"parameters\": dictionary of argument n"
     "ame and its value}.Do not use variables.\n"
     "\n"
     "{\n"
     "    \"type\": \"function\",\n"
     "    \"function\": {\n"
     "        \"name\": \"get_weather\",\n"
     "        \"description\": \"Get the weather\",\n"
     "        \"parameters\": {\n"
     "            \"type\": \"object\",\n"
     "            \"properties\": {\n"
     "                \"city\": {\n"
     "                    \"type\": \"string\"\n"
     "                }\n"
     "            },\n"
     "            \"required\": [\n"
     "                \"city\"\n"
     "            ]\n"
     "        }\n"
     "    }\n"
     "}\n"
     "\n"
     "What is 2+2?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n"
     "\n"
     "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}<|eot_id|><|start_head"
     "er_id|>ipython<|end_header_id|>\n"
     "\n"
     "\"22C\"<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n"
     "\n"
     "It is 22C.<|eot_id|><|start_header_id|>user<|end_header_id|>\n"
     "\n"
     "Thanks<|eot_id|>",
     NULL, TOOLS_JSON},
    {"llama31", tmpl_llama31, CONV_TOOLS, 1,
     "<s><|start_header_id|>system<|end_header_id|>\n"
     "\n"
     "Environment: ipython\n"
     "Cutting Knowledge Date: December 2023\n"
     "Today Date: 26 Jul 2024\n"
     "\n"
     "<|eot_id|><|start_header_id|>user<|end_header_id|>\n"
     "\n"
     "Given the following functions, please respond with a JSON for a function call with its p"
     "roper arguments that best answers the given prompt.\n"
     "\n"
     "Respond in the format {\"name\": function name, \"parameters\": dictionary of argument n"
     "ame and its value}.Do not use variables.\n"
     "\n"
     "{\n"
     "    \"type\": \"function\",\n"
     "    \"function\": {\n"
     "        \"name\": \"get_weather\",\n"
     "        \"description\": \"Get the weather\",\n"
     "        \"parameters\": {\n"
     "            \"type\": \"object\",\n"
     "            \"properties\": {\n"
     "                \"city\": {\n"
     "                    \"type\": \"string\"\n"
     "                }\n"
     "            },\n"
     "            \"required\": [\n"
     "                \"city\"\n"
     "            ]\n"
     "        }\n"
     "    }\n"
     "}\n"
     "\n"
     "What is 2+2?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n"
     "\n"
     "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}<|eot_id|><|start_head"
     "er_id|>ipython<|end_header_id|>\n"
     "\n"
     "\"22C\"<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n"
     "\n"
     "It is 22C.<|eot_id|><|start_header_id|>user<|end_header_id|>\n"
     "\n"
     "Thanks<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n"
     "\n",
     NULL, TOOLS_JSON},
    {"llama31", tmpl_llama31, CONV_TOOLS, 1,
     "<s><|start_header_id|>system<|end_header_id|>\n"
     "\n"
     "Cutting Knowledge Date: December 2023\n"
     "Today Date: 26 Jul 2024\n"
     "\n"
     "<|eot_id|><|start_header_id|>user<|end_header_id|>\n"
     "\n"
     "What is 2+2?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n"
     "\n"
     "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}<|eot_id|><|start_head"
     "er_id|>ipython<|end_header_id|>\n"
     "\n"
     "\"22C\"<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n"
     "\n"
     "It is 22C.<|eot_id|><|start_header_id|>user<|end_header_id|>\n"
     "\n"
     "Thanks<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n"
     "\n",
     NULL, NULL},
    {"llama31", tmpl_llama31, CONV_PARALLEL, 1, NULL,
     "This model only supports single tool-calls at once!", TOOLS_JSON},
    {"llama32", tmpl_llama32, CONV_SINGLE, 0,
     "<s><|start_header_id|>system<|end_header_id|>\n"
     "\n"
     "Cutting Knowledge Date: December 2023\n"
     "Today Date: " TODAY_MARK "\n"
     "\n"
     "<|eot_id|><|start_header_id|>user<|end_header_id|>\n"
     "\n"
     "Hi there!<|eot_id|>",
     NULL, NULL},
    {"llama32", tmpl_llama32, CONV_SINGLE, 1,
     "<s><|start_header_id|>system<|end_header_id|>\n"
     "\n"
     "Cutting Knowledge Date: December 2023\n"
     "Today Date: " TODAY_MARK "\n"
     "\n"
     "<|eot_id|><|start_header_id|>user<|end_header_id|>\n"
     "\n"
     "Hi there!<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n"
     "\n",
     NULL, NULL},
    {"llama32", tmpl_llama32, CONV_SYSTEM, 0,
     "<s><|start_header_id|>system<|end_header_id|>\n"
     "\n"
     "Cutting Knowledge Date: December 2023\n"
     "Today Date: " TODAY_MARK "\n"
     "\n"
     "You are terse.<|eot_id|><|start_header_id|>user<|end_header_id|>\n"
     "\n"
     "Hi there!<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n"
     "\n"
     "Hello.<|eot_id|><|start_header_id|>user<|end_header_id|>\n"
     "\n"
     "What is 2+2?<|eot_id|>",
     NULL, NULL},
    {"llama32", tmpl_llama32, CONV_SYSTEM, 1,
     "<s><|start_header_id|>system<|end_header_id|>\n"
     "\n"
     "Cutting Knowledge Date: December 2023\n"
     "Today Date: " TODAY_MARK "\n"
     "\n"
     "You are terse.<|eot_id|><|start_header_id|>user<|end_header_id|>\n"
     "\n"
     "Hi there!<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n"
     "\n"
     "Hello.<|eot_id|><|start_header_id|>user<|end_header_id|>\n"
     "\n"
     "What is 2+2?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n"
     "\n",
     NULL, NULL},
    {"llama32", tmpl_llama32, CONV_SINGLE, 0,
     "<s><|start_header_id|>system<|end_header_id|>\n"
     "\n"
     "Environment: ipython\n"
     "Cutting Knowledge Date: December 2023\n"
     "Today Date: " TODAY_MARK "\n"
     "\n"
     "<|eot_id|><|start_header_id|>user<|end_header_id|>\n"
     "\n"
     "Given the following functions, please respond with a JSON for a function call with its p"
     "roper arguments that best answers the given prompt.\n"
     "\n"
     "Respond in the format {\"name\": function name, \"parameters\": dictionary of argument n"
     "ame and its value}.Do not use variables.\n"
     "\n"
     "{\n"
     "    \"type\": \"function\",\n"
     "    \"function\": {\n"
     "        \"name\": \"get_weather\",\n"
     "        \"description\": \"Get the weather\",\n"
     "        \"parameters\": {\n"
     "            \"type\": \"object\",\n"
     "            \"properties\": {\n"
     "                \"city\": {\n"
     "                    \"type\": \"string\"\n"
     "                }\n"
     "            },\n"
     "            \"required\": [\n"
     "                \"city\"\n"
     "            ]\n"
     "        }\n"
     "    }\n"
     "}\n"
     "\n"
     "Hi there!<|eot_id|>",
     NULL, TOOLS_JSON},
    {"llama32", tmpl_llama32, CONV_SINGLE, 1,
     "<s><|start_header_id|>system<|end_header_id|>\n"
     "\n"
     "Environment: ipython\n"
     "Cutting Knowledge Date: December 2023\n"
     "Today Date: " TODAY_MARK "\n"
     "\n"
     "<|eot_id|><|start_header_id|>user<|end_header_id|>\n"
     "\n"
     "Given the following functions, please respond with a JSON for a function call with its p"
     "roper arguments that best answers the given prompt.\n"
     "\n"
     "Respond in the format {\"name\": function name, \"parameters\": dictionary of argument n"
     "ame and its value}.Do not use variables.\n"
     "\n"
     "{\n"
     "    \"type\": \"function\",\n"
     "    \"function\": {\n"
     "        \"name\": \"get_weather\",\n"
     "        \"description\": \"Get the weather\",\n"
     "        \"parameters\": {\n"
     "            \"type\": \"object\",\n"
     "            \"properties\": {\n"
     "                \"city\": {\n"
     "                    \"type\": \"string\"\n"
     "                }\n"
     "            },\n"
     "            \"required\": [\n"
     "                \"city\"\n"
     "            ]\n"
     "        }\n"
     "    }\n"
     "}\n"
     "\n"
     "Hi there!<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n"
     "\n",
     NULL, TOOLS_JSON},
    {"llama32", tmpl_llama32, CONV_SYSTEM, 1,
     "<s><|start_header_id|>system<|end_header_id|>\n"
     "\n"
     "Environment: ipython\n"
     "Cutting Knowledge Date: December 2023\n"
     "Today Date: " TODAY_MARK "\n"
     "\n"
     "You are terse.<|eot_id|><|start_header_id|>user<|end_header_id|>\n"
     "\n"
     "Given the following functions, please respond with a JSON for a function call with its p"
     "roper arguments that best answers the given prompt.\n"
     "\n"
     "Respond in the format {\"name\": function name, \"parameters\": dictionary of argument n"
     "ame and its value}.Do not use variables.\n"
     "\n"
     "{\n"
     "    \"type\": \"function\",\n"
     "    \"function\": {\n"
     "        \"name\": \"get_weather\",\n"
     "        \"description\": \"Get the weather\",\n"
     "        \"parameters\": {\n"
     "            \"type\": \"object\",\n"
     "            \"properties\": {\n"
     "                \"city\": {\n"
     "                    \"type\": \"string\"\n"
     "                }\n"
     "            },\n"
     "            \"required\": [\n"
     "                \"city\"\n"
     "            ]\n"
     "        }\n"
     "    }\n"
     "}\n"
     "\n"
     "Hi there!<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n"
     "\n"
     "Hello.<|eot_id|><|start_header_id|>user<|end_header_id|>\n"
     "\n"
     "What is 2+2?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n"
     "\n",
     NULL, TOOLS_JSON},
    {"llama32", tmpl_llama32, CONV_TOOLS, 0,
     "<s><|start_header_id|>system<|end_header_id|>\n"
     "\n"
     "Environment: ipython\n"
     "Cutting Knowledge Date: December 2023\n"
     "Today Date: " TODAY_MARK "\n"
     "\n"
     "<|eot_id|><|start_header_id|>user<|end_header_id|>\n"
     "\n"
     "Given the following functions, please respond with a JSON for a function call with its p"
     "roper arguments that best answers the given prompt.\n"
     "\n"
     "Respond in the format {\"name\": function name, \"parameters\": dictionary of argument n"
     "ame and its value}.Do not use variables.\n"
     "\n"
     "{\n"
     "    \"type\": \"function\",\n"
     "    \"function\": {\n"
     "        \"name\": \"get_weather\",\n"
     "        \"description\": \"Get the weather\",\n"
     "        \"parameters\": {\n"
     "            \"type\": \"object\",\n"
     "            \"properties\": {\n"
     "                \"city\": {\n"
     "                    \"type\": \"string\"\n"
     "                }\n"
     "            },\n"
     "            \"required\": [\n"
     "                \"city\"\n"
     "            ]\n"
     "        }\n"
     "    }\n"
     "}\n"
     "\n"
     "What is 2+2?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n"
     "\n"
     "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}<|eot_id|><|start_head"
     "er_id|>ipython<|end_header_id|>\n"
     "\n"
     "\"22C\"<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n"
     "\n"
     "It is 22C.<|eot_id|><|start_header_id|>user<|end_header_id|>\n"
     "\n"
     "Thanks<|eot_id|>",
     NULL, TOOLS_JSON},
    {"llama32", tmpl_llama32, CONV_TOOLS, 1,
     "<s><|start_header_id|>system<|end_header_id|>\n"
     "\n"
     "Environment: ipython\n"
     "Cutting Knowledge Date: December 2023\n"
     "Today Date: " TODAY_MARK "\n"
     "\n"
     "<|eot_id|><|start_header_id|>user<|end_header_id|>\n"
     "\n"
     "Given the following functions, please respond with a JSON for a function call with its p"
     "roper arguments that best answers the given prompt.\n"
     "\n"
     "Respond in the format {\"name\": function name, \"parameters\": dictionary of argument n"
     "ame and its value}.Do not use variables.\n"
     "\n"
     "{\n"
     "    \"type\": \"function\",\n"
     "    \"function\": {\n"
     "        \"name\": \"get_weather\",\n"
     "        \"description\": \"Get the weather\",\n"
     "        \"parameters\": {\n"
     "            \"type\": \"object\",\n"
     "            \"properties\": {\n"
     "                \"city\": {\n"
     "                    \"type\": \"string\"\n"
     "                }\n"
     "            },\n"
     "            \"required\": [\n"
     "                \"city\"\n"
     "            ]\n"
     "        }\n"
     "    }\n"
     "}\n"
     "\n"
     "What is 2+2?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n"
     "\n"
     "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}<|eot_id|><|start_head"
     "er_id|>ipython<|end_header_id|>\n"
     "\n"
     "\"22C\"<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n"
     "\n"
     "It is 22C.<|eot_id|><|start_header_id|>user<|end_header_id|>\n"
     "\n"
     "Thanks<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n"
     "\n",
     NULL, TOOLS_JSON},
    {"llama32", tmpl_llama32, CONV_TOOLS, 1,
     "<s><|start_header_id|>system<|end_header_id|>\n"
     "\n"
     "Cutting Knowledge Date: December 2023\n"
     "Today Date: " TODAY_MARK "\n"
     "\n"
     "<|eot_id|><|start_header_id|>user<|end_header_id|>\n"
     "\n"
     "What is 2+2?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n"
     "\n"
     "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}<|eot_id|><|start_head"
     "er_id|>ipython<|end_header_id|>\n"
     "\n"
     "\"22C\"<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n"
     "\n"
     "It is 22C.<|eot_id|><|start_header_id|>user<|end_header_id|>\n"
     "\n"
     "Thanks<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n"
     "\n",
     NULL, NULL},
    {"llama32", tmpl_llama32, CONV_PARALLEL, 1, NULL,
     "This model only supports single tool-calls at once!", TOOLS_JSON},
    {"mistral_nemo", tmpl_mistral_nemo, CONV_SINGLE, 0, "<s>[INST] Hi there! [/INST]", NULL, NULL},
    {"mistral_nemo", tmpl_mistral_nemo, CONV_SINGLE, 1, "<s>[INST] Hi there! [/INST]", NULL, NULL},
    {"mistral_nemo", tmpl_mistral_nemo, CONV_MULTI, 1,
     "<s>[INST] Hi there! [/INST]Hello. </s>[INST]What is 2+2?[/INST]", NULL, NULL},
    {"mistral_nemo", tmpl_mistral_nemo, CONV_SYSTEM, 0,
     "<s>[INST] Hi there! [/INST]Hello. </s>[INST]You are terse.\n"
     "\n"
     "What is 2+2?[/INST]",
     NULL, NULL},
    {"mistral_nemo", tmpl_mistral_nemo, CONV_SYSTEM, 1,
     "<s>[INST] Hi there! [/INST]Hello. </s>[INST]You are terse.\n"
     "\n"
     "What is 2+2?[/INST]",
     NULL, NULL},
    {"mistral_nemo", tmpl_mistral_nemo, CONV_BAD_ALTERNATION, 1, NULL,
     "After the optional system message, conversation roles must alternate user/assistant/user"
     "/assistant/...",
     NULL},
    {"mistral_nemo", tmpl_mistral_nemo, CONV_SINGLE, 1,
     "<s>[AVAILABLE_TOOLS][{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", "
     "\"description\": \"Get the weather\", \"parameters\": {\"type\": \"object\", \"propertie"
     "s\": {\"city\": {\"type\": \"string\"}}, \"required\": [\"city\"]}}}][/AVAILABLE_TOOLS]["
     "INST] Hi there! [/INST]",
     NULL, TOOLS_JSON},
    {"mistral_nemo", tmpl_mistral_nemo, CONV_SYSTEM, 1,
     "<s>[INST] Hi there! [/INST]Hello. </s>[AVAILABLE_TOOLS][{\"type\": \"function\", \"funct"
     "ion\": {\"name\": \"get_weather\", \"description\": \"Get the weather\", \"parameters\":"
     " {\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\"}}, \"required\""
     ": [\"city\"]}}}][/AVAILABLE_TOOLS][INST]You are terse.\n"
     "\n"
     "What is 2+2?[/INST]",
     NULL, TOOLS_JSON},
    {"mistral_nemo", tmpl_mistral_nemo, CONV_TOOLS, 0,
     "<s>[INST]What is 2+2?[/INST][TOOL_CALLS][{\"name\": \"get_weather\", \"arguments\": {\"c"
     "ity\": \"Paris\"}, \"id\": \"abcdefghi\"}]</s>[TOOL_RESULTS]{\"content\": 22C, \"call_id"
     "\": \"abcdefghi\"}[/TOOL_RESULTS]It is 22C.</s>[AVAILABLE_TOOLS][{\"type\": \"function\""
     ", \"function\": {\"name\": \"get_weather\", \"description\": \"Get the weather\", \"para"
     "meters\": {\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\"}}, \"r"
     "equired\": [\"city\"]}}}][/AVAILABLE_TOOLS][INST]Thanks[/INST]",
     NULL, TOOLS_JSON},
    {"mistral_nemo", tmpl_mistral_nemo, CONV_TOOLS, 1,
     "<s>[INST]What is 2+2?[/INST][TOOL_CALLS][{\"name\": \"get_weather\", \"arguments\": {\"c"
     "ity\": \"Paris\"}, \"id\": \"abcdefghi\"}]</s>[TOOL_RESULTS]{\"content\": 22C, \"call_id"
     "\": \"abcdefghi\"}[/TOOL_RESULTS]It is 22C.</s>[AVAILABLE_TOOLS][{\"type\": \"function\""
     ", \"function\": {\"name\": \"get_weather\", \"description\": \"Get the weather\", \"para"
     "meters\": {\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\"}}, \"r"
     "equired\": [\"city\"]}}}][/AVAILABLE_TOOLS][INST]Thanks[/INST]",
     NULL, TOOLS_JSON},
    {"mistral_nemo", tmpl_mistral_nemo, CONV_PARALLEL, 0,
     "<s>[AVAILABLE_TOOLS][{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", "
     "\"description\": \"Get the weather\", \"parameters\": {\"type\": \"object\", \"propertie"
     "s\": {\"city\": {\"type\": \"string\"}}, \"required\": [\"city\"]}}}][/AVAILABLE_TOOLS]["
     "INST]Paris or Rome?[/INST][TOOL_CALLS][{\"name\": \"get_weather\", \"arguments\": {\"cit"
     "y\": \"Paris\"}, \"id\": \"abcdefghi\"}, {\"name\": \"get_weather\", \"arguments\": {\"c"
     "ity\": \"Rome\"}, \"id\": \"jklmnopqr\"}]</s>[TOOL_RESULTS]{\"content\": 22C, \"call_id"
     "\": \"abcdefghi\"}[/TOOL_RESULTS][TOOL_RESULTS]{\"content\": 25C, \"call_id\": \"jklmnop"
     "qr\"}[/TOOL_RESULTS]Rome, at 25C.</s>",
     NULL, TOOLS_JSON},
    {"mistral_nemo", tmpl_mistral_nemo, CONV_PARALLEL, 1,
     "<s>[AVAILABLE_TOOLS][{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", "
     "\"description\": \"Get the weather\", \"parameters\": {\"type\": \"object\", \"propertie"
     "s\": {\"city\": {\"type\": \"string\"}}, \"required\": [\"city\"]}}}][/AVAILABLE_TOOLS]["
     "INST]Paris or Rome?[/INST][TOOL_CALLS][{\"name\": \"get_weather\", \"arguments\": {\"cit"
     "y\": \"Paris\"}, \"id\": \"abcdefghi\"}, {\"name\": \"get_weather\", \"arguments\": {\"c"
     "ity\": \"Rome\"}, \"id\": \"jklmnopqr\"}]</s>[TOOL_RESULTS]{\"content\": 22C, \"call_id"
     "\": \"abcdefghi\"}[/TOOL_RESULTS][TOOL_RESULTS]{\"content\": 25C, \"call_id\": \"jklmnop"
     "qr\"}[/TOOL_RESULTS]Rome, at 25C.</s>",
     NULL, TOOLS_JSON},
    {"mistral_nemo", tmpl_mistral_nemo, CONV_BAD_ID, 1, NULL,
     "Tool call IDs should be alphanumeric strings with length 9!", TOOLS_JSON},
    {"mistral03", tmpl_mistral03, CONV_SINGLE, 1,
     "<s>[AVAILABLE_TOOLS] [{\"type\": \"function\", \"function\": {\"name\": \"get_weather\","
     " \"description\": \"Get the weather\", \"parameters\": {\"type\": \"object\", \"properti"
     "es\": {\"city\": {\"type\": \"string\"}}, \"required\": [\"city\"]}}}][/AVAILABLE_TOOLS]"
     "[INST]  Hi there! [/INST]",
     NULL, TOOLS_JSON},
    {"mistral03", tmpl_mistral03, CONV_PARALLEL, 1,
     "<s>[AVAILABLE_TOOLS] [{\"type\": \"function\", \"function\": {\"name\": \"get_weather\","
     " \"description\": \"Get the weather\", \"parameters\": {\"type\": \"object\", \"properti"
     "es\": {\"city\": {\"type\": \"string\"}}, \"required\": [\"city\"]}}}][/AVAILABLE_TOOLS]"
     "[INST] Paris or Rome?[/INST][TOOL_CALLS] [{\"name\": \"get_weather\", \"arguments\": {\""
     "city\": \"Paris\"}, \"id\": \"abcdefghi\"}, {\"name\": \"get_weather\", \"arguments\": {"
     "\"city\": \"Rome\"}, \"id\": \"jklmnopqr\"}]</s>[TOOL_RESULTS] {\"content\": 22C, \"call"
     "_id\": \"abcdefghi\"}[/TOOL_RESULTS][TOOL_RESULTS] {\"content\": 25C, \"call_id\": \"jkl"
     "mnopqr\"}[/TOOL_RESULTS] Rome, at 25C.</s>",
     NULL, TOOLS_JSON},
    {"mistral03", tmpl_mistral03, CONV_BAD_ID, 1, NULL,
     "Tool call IDs should be alphanumeric strings with length 9!", TOOLS_JSON},
    {"qwen25", tmpl_qwen25, CONV_SINGLE, 1,
     "<|im_start|>system\n"
     "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.\n"
     "\n"
     "# Tools\n"
     "\n"
     "You may call one or more functions to assist with the user query.\n"
     "\n"
     "You are provided with function signatures within <tools></tools> XML tags:\n"
     "<tools>\n"
     "{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"description\": \"Ge"
     "t the weather\", \"parameters\": {\"type\": \"object\", \"properties\": {\"city\": {\"ty"
     "pe\": \"string\"}}, \"required\": [\"city\"]}}}\n"
     "</tools>\n"
     "\n"
     "For each function call, return a json object with function name and arguments within <to"
     "ol_call></tool_call> XML tags:\n"
     "<tool_call>\n"
     "{\"name\": <function-name>, \"arguments\": <args-json-object>}\n"
     "</tool_call><|im_end|>\n"
     "<|im_start|>user\n"
     " Hi there! <|im_end|>\n"
     "<|im_start|>assistant\n",
     NULL, TOOLS_JSON},
    {"qwen25", tmpl_qwen25, CONV_TOOLS, 0,
     "<|im_start|>system\n"
     "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.\n"
     "\n"
     "# Tools\n"
     "\n"
     "You may call one or more functions to assist with the user query.\n"
     "\n"
     "You are provided with function signatures within <tools></tools> XML tags:\n"
     "<tools>\n"
     "{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"description\": \"Ge"
     "t the weather\", \"parameters\": {\"type\": \"object\", \"properties\": {\"city\": {\"ty"
     "pe\": \"string\"}}, \"required\": [\"city\"]}}}\n"
     "</tools>\n"
     "\n"
     "For each function call, return a json object with function name and arguments within <to"
     "ol_call></tool_call> XML tags:\n"
     "<tool_call>\n"
     "{\"name\": <function-name>, \"arguments\": <args-json-object>}\n"
     "</tool_call><|im_end|>\n"
     "<|im_start|>user\n"
     "What is 2+2?<|im_end|>\n"
     "<|im_start|>assistant\n"
     "<tool_call>\n"
     "{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n"
     "</tool_call><|im_end|>\n"
     "<|im_start|>user\n"
     "<tool_response>\n"
     "22C\n"
     "</tool_response><|im_end|>\n"
     "<|im_start|>assistant\n"
     "It is 22C.<|im_end|>\n"
     "<|im_start|>user\n"
     "Thanks<|im_end|>\n",
     NULL, TOOLS_JSON},
    {"qwen25", tmpl_qwen25, CONV_PARALLEL, 0,
     "<|im_start|>system\n"
     "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.\n"
     "\n"
     "# Tools\n"
     "\n"
     "You may call one or more functions to assist with the user query.\n"
     "\n"
     "You are provided with function signatures within <tools></tools> XML tags:\n"
     "<tools>\n"
     "{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"description\": \"Ge"
     "t the weather\", \"parameters\": {\"type\": \"object\", \"properties\": {\"city\": {\"ty"
     "pe\": \"string\"}}, \"required\": [\"city\"]}}}\n"
     "</tools>\n"
     "\n"
     "For each function call, return a json object with function name and arguments within <to"
     "ol_call></tool_call> XML tags:\n"
     "<tool_call>\n"
     "{\"name\": <function-name>, \"arguments\": <args-json-object>}\n"
     "</tool_call><|im_end|>\n"
     "<|im_start|>user\n"
     "Paris or Rome?<|im_end|>\n"
     "<|im_start|>assistant\n"
     "<tool_call>\n"
     "{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n"
     "</tool_call>\n"
     "<tool_call>\n"
     "{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Rome\"}}\n"
     "</tool_call><|im_end|>\n"
     "<|im_start|>user\n"
     "<tool_response>\n"
     "22C\n"
     "</tool_response>\n"
     "<tool_response>\n"
     "25C\n"
     "</tool_response><|im_end|>\n"
     "<|im_start|>assistant\n"
     "Rome, at 25C.<|im_end|>\n",
     NULL, TOOLS_JSON},
    {"qwen25", tmpl_qwen25, CONV_PARALLEL, 1,
     "<|im_start|>system\n"
     "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.\n"
     "\n"
     "# Tools\n"
     "\n"
     "You may call one or more functions to assist with the user query.\n"
     "\n"
     "You are provided with function signatures within <tools></tools> XML tags:\n"
     "<tools>\n"
     "{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"description\": \"Ge"
     "t the weather\", \"parameters\": {\"type\": \"object\", \"properties\": {\"city\": {\"ty"
     "pe\": \"string\"}}, \"required\": [\"city\"]}}}\n"
     "</tools>\n"
     "\n"
     "For each function call, return a json object with function name and arguments within <to"
     "ol_call></tool_call> XML tags:\n"
     "<tool_call>\n"
     "{\"name\": <function-name>, \"arguments\": <args-json-object>}\n"
     "</tool_call><|im_end|>\n"
     "<|im_start|>user\n"
     "Paris or Rome?<|im_end|>\n"
     "<|im_start|>assistant\n"
     "<tool_call>\n"
     "{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n"
     "</tool_call>\n"
     "<tool_call>\n"
     "{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Rome\"}}\n"
     "</tool_call><|im_end|>\n"
     "<|im_start|>user\n"
     "<tool_response>\n"
     "22C\n"
     "</tool_response>\n"
     "<tool_response>\n"
     "25C\n"
     "</tool_response><|im_end|>\n"
     "<|im_start|>assistant\n"
     "Rome, at 25C.<|im_end|>\n"
     "<|im_start|>assistant\n",
     NULL, TOOLS_JSON},
};

/* Variables Hugging Face passes only as apply_chat_template's extra keyword
 * arguments (builtin_tools, custom_tools, tools_in_user_message,
 * date_string), which fy_chat_template_render does not take: these cases
 * render through the interpreter directly, under the same settings. */
struct kwarg_case {
    const char *name;
    const char *tmpl;
    const char *vars; /* every variable, as a JSON object */
    const char *want; /* NULL: rendering must fail with want_err */
    const char *want_err;
};

static const struct kwarg_case kwarg_cases[] = {
    {"llama31 builtin_tools", tmpl_llama31,
     "{\"messages\": " CONV_BUILTIN ", " SPECIAL_TOKENS
     ", \"add_generation_prompt\": true, \"builtin_tools\": [\"brave_search\", \"wolfram_alpha\", "
     "\"code_interpreter\"], \"date_string\": \"01 Jan 2025\"}",
     "<s><|start_header_id|>system<|end_header_id|>\n"
     "\n"
     "Environment: ipython\n"
     "Tools: brave_search, wolfram_alpha\n"
     "\n"
     "Cutting Knowledge Date: December 2023\n"
     "Today Date: 01 Jan 2025\n"
     "\n"
     "Be brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n"
     "\n"
     "Weather in Paris?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n"
     "\n"
     "<|python_tag|>brave_search.call(query=\"weather Paris\")<|eom_id|><|start_header_id|>ipy"
     "thon<|end_header_id|>\n"
     "\n"
     "\"Sunny, 22C\"<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n"
     "\n",
     NULL},
    {"llama31 builtin_tools, custom call", tmpl_llama31,
     "{\"messages\": " CONV_TOOLS ", " SPECIAL_TOKENS
     ", \"add_generation_prompt\": false, \"builtin_tools\": [\"brave_search\"], "
     "\"tools\": " TOOLS_JSON "}",
     "<s><|start_header_id|>system<|end_header_id|>\n"
     "\n"
     "Environment: ipython\n"
     "Tools: brave_search\n"
     "\n"
     "Cutting Knowledge Date: December 2023\n"
     "Today Date: 26 Jul 2024\n"
     "\n"
     "<|eot_id|><|start_header_id|>user<|end_header_id|>\n"
     "\n"
     "Given the following functions, please respond with a JSON for a function call with its p"
     "roper arguments that best answers the given prompt.\n"
     "\n"
     "Respond in the format {\"name\": function name, \"parameters\": dictionary of argument n"
     "ame and its value}.Do not use variables.\n"
     "\n"
     "{\n"
     "    \"type\": \"function\",\n"
     "    \"function\": {\n"
     "        \"name\": \"get_weather\",\n"
     "        \"description\": \"Get the weather\",\n"
     "        \"parameters\": {\n"
     "            \"type\": \"object\",\n"
     "            \"properties\": {\n"
     "                \"city\": {\n"
     "                    \"type\": \"string\"\n"
     "                }\n"
     "            },\n"
     "            \"required\": [\n"
     "                \"city\"\n"
     "            ]\n"
     "        }\n"
     "    }\n"
     "}\n"
     "\n"
     "What is 2+2?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n"
     "\n"
     "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}<|eom_id|><|start_head"
     "er_id|>ipython<|end_header_id|>\n"
     "\n"
     "\"22C\"<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n"
     "\n"
     "It is 22C.<|eot_id|><|start_header_id|>user<|end_header_id|>\n"
     "\n"
     "Thanks<|eot_id|>",
     NULL},
    {"llama31 tools in the system message", tmpl_llama31,
     "{\"messages\": " CONV_TOOLS ", " SPECIAL_TOKENS
     ", \"add_generation_prompt\": true, \"tools_in_user_message\": false, "
     "\"tools\": " TOOLS_AWKWARD "}",
     "<s><|start_header_id|>system<|end_header_id|>\n"
     "\n"
     "Environment: ipython\n"
     "Cutting Knowledge Date: December 2023\n"
     "Today Date: 26 Jul 2024\n"
     "\n"
     "You have access to the following functions. To call a function, please respond with JSON"
     " for a function call.Respond in the format {\"name\": function name, \"parameters\": dic"
     "tionary of argument name and its value}.Do not use variables.\n"
     "\n"
     "{\n"
     "    \"type\": \"function\",\n"
     "    \"function\": {\n"
     "        \"name\": \"météo\",\n"
     "        \"description\": \"Temps — 天気 \\\"now\\\"\\n\",\n"
     "        \"parameters\": {\n"
     "            \"type\": \"object\",\n"
     "            \"properties\": {},\n"
     "            \"required\": [],\n"
     "            \"x\": [\n"
     "                1,\n"
     "                1.5,\n"
     "                -2e-07,\n"
     "                true,\n"
     "                false,\n"
     "                null,\n"
     "                {},\n"
     "                [\n"
     "                    []\n"
     "                ]\n"
     "            ]\n"
     "        }\n"
     "    }\n"
     "}\n"
     "\n"
     "<|eot_id|><|start_header_id|>user<|end_header_id|>\n"
     "\n"
     "What is 2+2?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n"
     "\n"
     "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}<|eot_id|><|start_head"
     "er_id|>ipython<|end_header_id|>\n"
     "\n"
     "\"22C\"<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n"
     "\n"
     "It is 22C.<|eot_id|><|start_header_id|>user<|end_header_id|>\n"
     "\n"
     "Thanks<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n"
     "\n",
     NULL},
    {"llama31 custom_tools", tmpl_llama31,
     "{\"messages\": " CONV_SINGLE ", " SPECIAL_TOKENS
     ", \"add_generation_prompt\": true, \"custom_tools\": " TOOLS_JSON "}",
     "<s><|start_header_id|>system<|end_header_id|>\n"
     "\n"
     "Environment: ipython\n"
     "Cutting Knowledge Date: December 2023\n"
     "Today Date: 26 Jul 2024\n"
     "\n"
     "<|eot_id|><|start_header_id|>user<|end_header_id|>\n"
     "\n"
     "Given the following functions, please respond with a JSON for a function call with its p"
     "roper arguments that best answers the given prompt.\n"
     "\n"
     "Respond in the format {\"name\": function name, \"parameters\": dictionary of argument n"
     "ame and its value}.Do not use variables.\n"
     "\n"
     "{\n"
     "    \"type\": \"function\",\n"
     "    \"function\": {\n"
     "        \"name\": \"get_weather\",\n"
     "        \"description\": \"Get the weather\",\n"
     "        \"parameters\": {\n"
     "            \"type\": \"object\",\n"
     "            \"properties\": {\n"
     "                \"city\": {\n"
     "                    \"type\": \"string\"\n"
     "                }\n"
     "            },\n"
     "            \"required\": [\n"
     "                \"city\"\n"
     "            ]\n"
     "        }\n"
     "    }\n"
     "}\n"
     "\n"
     "Hi there!<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n"
     "\n",
     NULL},
    {"llama31 no first user message", tmpl_llama31,
     "{\"messages\": "
     "[{\"role\": \"system\", \"content\": \"x\"}]"
     ", " SPECIAL_TOKENS ", \"add_generation_prompt\": true, \"tools\": " TOOLS_JSON "}",
     NULL, "Cannot put tools in the first user message when there's no first user message!"},
    {"llama32 date_string", tmpl_llama32,
     "{\"messages\": " CONV_SYSTEM ", " SPECIAL_TOKENS
     ", \"add_generation_prompt\": true, \"date_string\": \"01 Jan 2025\", "
     "\"tools\": " TOOLS_AWKWARD "}",
     "<s><|start_header_id|>system<|end_header_id|>\n"
     "\n"
     "Environment: ipython\n"
     "Cutting Knowledge Date: December 2023\n"
     "Today Date: 01 Jan 2025\n"
     "\n"
     "You are terse.<|eot_id|><|start_header_id|>user<|end_header_id|>\n"
     "\n"
     "Given the following functions, please respond with a JSON for a function call with its p"
     "roper arguments that best answers the given prompt.\n"
     "\n"
     "Respond in the format {\"name\": function name, \"parameters\": dictionary of argument n"
     "ame and its value}.Do not use variables.\n"
     "\n"
     "{\n"
     "    \"type\": \"function\",\n"
     "    \"function\": {\n"
     "        \"name\": \"météo\",\n"
     "        \"description\": \"Temps — 天気 \\\"now\\\"\\n\",\n"
     "        \"parameters\": {\n"
     "            \"type\": \"object\",\n"
     "            \"properties\": {},\n"
     "            \"required\": [],\n"
     "            \"x\": [\n"
     "                1,\n"
     "                1.5,\n"
     "                -2e-07,\n"
     "                true,\n"
     "                false,\n"
     "                null,\n"
     "                {},\n"
     "                [\n"
     "                    []\n"
     "                ]\n"
     "            ]\n"
     "        }\n"
     "    }\n"
     "}\n"
     "\n"
     "Hi there!<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n"
     "\n"
     "Hello.<|eot_id|><|start_header_id|>user<|end_header_id|>\n"
     "\n"
     "What is 2+2?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n"
     "\n",
     NULL},
    {"qwen25 awkward tools", tmpl_qwen25,
     "{\"messages\": " CONV_SINGLE ", " SPECIAL_TOKENS
     ", \"add_generation_prompt\": true, \"tools\": " TOOLS_AWKWARD "}",
     "<|im_start|>system\n"
     "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.\n"
     "\n"
     "# Tools\n"
     "\n"
     "You may call one or more functions to assist with the user query.\n"
     "\n"
     "You are provided with function signatures within <tools></tools> XML tags:\n"
     "<tools>\n"
     "{\"type\": \"function\", \"function\": {\"name\": \"météo\", \"description\": \"Temps — "
     "天気 \\\"now\\\"\\n\", \"parameters\": {\"type\": \"object\", \"properties\": {}, \"requir"
     "ed\": [], \"x\": [1, 1.5, -2e-07, true, false, null, {}, [[]]]}}}\n"
     "</tools>\n"
     "\n"
     "For each function call, return a json object with function name and arguments within <to"
     "ol_call></tool_call> XML tags:\n"
     "<tool_call>\n"
     "{\"name\": <function-name>, \"arguments\": <args-json-object>}\n"
     "</tool_call><|im_end|>\n"
     "<|im_start|>user\n"
     " Hi there! <|im_end|>\n"
     "<|im_start|>assistant\n",
     NULL},
    {"mistral_nemo awkward tools", tmpl_mistral_nemo,
     "{\"messages\": " CONV_SINGLE ", " SPECIAL_TOKENS
     ", \"add_generation_prompt\": true, \"tools\": " TOOLS_AWKWARD "}",
     "<s>[AVAILABLE_TOOLS][{\"type\": \"function\", \"function\": {\"name\": \"météo\", \"desc"
     "ription\": \"Temps — 天気 \"now\"\n"
     "\", \"parameters\": {\"type\": \"object\", \"properties\": {}, \"required\": [], \"x\": "
     "[1, 1.5, -2e-07, true, false, null, {}, [[]]]}}}][/AVAILABLE_TOOLS][INST] Hi there! [/IN"
     "ST]",
     NULL},
};

static char *render_kwarg_case(const struct kwarg_case *c, int *rc, char *err, size_t errlen)
{
    fy_jinja *t = NULL;
    char *out = NULL;
    json_t *vars = json_loads(c->vars, 0, NULL);
    assert_non_null(vars);
    if (fy_jinja_compile(c->tmpl, strlen(c->tmpl), FY_JINJA_TRIM_BLOCKS | FY_JINJA_LSTRIP_BLOCKS,
                         &t, err, errlen)) {
        fail_msg("%s: compile failed: %s", c->name, err);
    }
    *rc = fy_jinja_render(t, vars, NULL, &out, NULL, err, errlen);
    fy_jinja_free(t);
    json_decref(vars);
    return out;
}

static char *render_case(const struct family_case *c, int *rc, char *err, size_t errlen)
{
    fy_chat_template *t = NULL;
    char cerr[256];
    int crc = fy_chat_template_new(c->tmpl, strlen(c->tmpl), "<s>", "</s>", &t, cerr, sizeof cerr);
    if (crc) {
        fail_msg("%s: compile failed: %s", c->family, cerr);
    }
    json_t *msgs = json_loads(c->messages, 0, NULL);
    json_t *tools = json_loads(c->tools ? c->tools : "null", JSON_DECODE_ANY, NULL);
    assert_non_null(msgs);
    assert_non_null(tools);
    char *out = NULL;
    size_t len = 0;
    *rc =
        fy_chat_template_render(t, msgs, tools, c->add_generation_prompt, &out, &len, err, errlen);
    if (!*rc) {
        assert_int_equal(len, strlen(out));
    }
    json_decref(msgs);
    json_decref(tools);
    fy_chat_template_free(t);
    return out;
}

/* WANT with each TODAY_MARK replaced by WHEN's local date as strftime_now("%d
 * %b %Y") writes it; the caller frees. */
static char *expand_today(const char *want, time_t when)
{
    char today[32];
    struct tm tm;
    size_t k = strftime(today, sizeof today, "%d %b %Y", localtime_r(&when, &tm));
    size_t mark = strlen(TODAY_MARK), n = 0;
    char *r = malloc(strlen(want) * (k > mark ? k : mark) + 1);
    assert_non_null(r);
    for (const char *p = want; *p;) {
        if (strncmp(p, TODAY_MARK, mark) == 0) {
            memcpy(r + n, today, k);
            n += k;
            p += mark;
        } else {
            r[n++] = *p++;
        }
    }
    r[n] = '\0';
    return r;
}

static void test_families(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof family_cases / sizeof family_cases[0]; i++) {
        const struct family_case *c = &family_cases[i];
        char err[512];
        int rc;
        time_t before = time(NULL);
        char *out = render_case(c, &rc, err, sizeof err);
        if (c->want) {
            if (rc) {
                fail_msg("case %zu (%s): failed: %s", i, c->family, err);
            }
            /* The date is read again should the render have crossed midnight. */
            char *want = expand_today(c->want, before);
            if (strcmp(out, want) != 0) {
                free(want);
                want = expand_today(c->want, time(NULL));
            }
            if (strcmp(out, want) != 0) {
                fail_msg("case %zu (%s, gen=%d):\n got:  [%s]\n want: [%s]", i, c->family,
                         c->add_generation_prompt, out, want);
            }
            free(want);
        } else {
            if (rc != FY_EINVAL) {
                fail_msg("case %zu (%s): want an error, got rc %d [%s]", i, c->family, rc,
                         out ? out : "");
            }
            if (c->want_err[0] &&
                (strncmp(err, FY_JINJA_RAISED_PREFIX, strlen(FY_JINJA_RAISED_PREFIX)) != 0 ||
                 !strstr(err, c->want_err))) {
                fail_msg("case %zu (%s): error [%s], want [%s]", i, c->family, err, c->want_err);
            }
        }
        free(out);
    }
}

static void test_kwargs(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof kwarg_cases / sizeof kwarg_cases[0]; i++) {
        const struct kwarg_case *c = &kwarg_cases[i];
        char err[512];
        int rc;
        char *out = render_kwarg_case(c, &rc, err, sizeof err);
        if (c->want && (rc || strcmp(out, c->want) != 0)) {
            fail_msg("%s: rc %d [%s]\n got:  [%s]\n want: [%s]", c->name, rc, err, out ? out : "",
                     c->want);
        }
        if (!c->want && (rc != FY_EINVAL || !strstr(err, c->want_err))) {
            fail_msg("%s: rc %d [%s], want FY_EINVAL [%s]", c->name, rc, err, c->want_err);
        }
        free(out);
    }
}

/* ------------------------------------------------------------ model directories */

static void write_file(const char *dir, const char *name, const char *text)
{
    char path[512];
    assert_int_equal(fy_path_join(path, sizeof path, dir, name), 0);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void make_dir(char *dir, size_t n)
{
    snprintf(dir, n, "/tmp/ferry_ct_XXXXXX");
    assert_non_null(mkdtemp(dir));
}

static void remove_dir(const char *dir)
{
    static const char *const names[] = {"tokenizer_config.json", "chat_template.jinja",
                                        "override.jinja"};
    char path[512];
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (!fy_path_join(path, sizeof path, dir, names[i])) {
            unlink(path);
        }
    }
    rmdir(dir);
}

static char *load_and_render(const char *dir, const char *override, const char *messages, int *rc,
                             char *err, size_t errlen)
{
    fy_chat_template *t = NULL;
    char *out = NULL;
    *rc = fy_chat_template_load(dir, override, &t, err, errlen);
    if (*rc) {
        assert_null(t);
        return NULL;
    }
    json_t *msgs = json_loads(messages, 0, NULL);
    assert_non_null(msgs);
    *rc = fy_chat_template_render(t, msgs, NULL, 1, &out, NULL, err, errlen);
    json_decref(msgs);
    fy_chat_template_free(t);
    return out;
}

/* The template that ships in the shared test data (Zephyr/TinyLlama style,
 * from chat_template.jinja, tokens from tokenizer_config.json). */
static void test_testdata_llama2(void **state)
{
    (void)state;
    const char *td = getenv("FERRY_TESTDATA");
    char dir[1024], probe[1100];
    if (!td) {
        printf("skipped: FERRY_TESTDATA is not set\n");
        skip();
    }
    snprintf(dir, sizeof dir, "%s/tokenizers/llama2", td);
    snprintf(probe, sizeof probe, "%s/chat_template.jinja", dir);
    if (!fy_file_exists(probe)) {
        printf("skipped: %s is absent\n", probe);
        skip();
    }
    fy_chat_template *t = NULL;
    char err[512];
    assert_int_equal(fy_chat_template_load(dir, NULL, &t, err, sizeof err), 0);
    assert_string_equal(fy_chat_template_bos(t), "<s>");
    assert_string_equal(fy_chat_template_eos(t), "</s>");
    assert_non_null(strstr(fy_chat_template_origin(t), "chat_template.jinja"));
    static const struct {
        const char *messages;
        int gen;
        const char *want;
    } cases[] = {
        {CONV_SINGLE, 1, "<|user|>\n Hi there! </s>\n<|assistant|>\n"},
        {CONV_SINGLE, 0, "<|user|>\n Hi there! </s>\n"},
        {CONV_SYSTEM, 1,
         "<|system|>\nYou are terse.</s>\n<|user|>\n Hi there! </s>\n<|assistant|>\nHello. "
         "</s>\n<|user|>\nWhat is 2+2?</s>\n<|assistant|>\n"},
        {"[]", 1, ""},
        {"[{\"role\": \"tool\", \"content\": \"x\"}]", 1, "<|assistant|>\n"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        json_t *msgs = json_loads(cases[i].messages, 0, NULL);
        char *out = NULL;
        assert_int_equal(
            fy_chat_template_render(t, msgs, NULL, cases[i].gen, &out, NULL, err, sizeof err), 0);
        if (strcmp(out, cases[i].want) != 0) {
            fail_msg("case %zu:\n got:  [%s]\n want: [%s]", i, out, cases[i].want);
        }
        free(out);
        json_decref(msgs);
    }
    fy_chat_template_free(t);
}

static void test_load_sources(void **state)
{
    (void)state;
    char dir[64], err[512], path[512];
    int rc;
    char *out;
    make_dir(dir, sizeof dir);

    /* No template anywhere: FY_ENOENT, and the caller decides. */
    out = load_and_render(dir, NULL, CONV_SINGLE, &rc, err, sizeof err);
    assert_int_equal(rc, FY_ENOENT);
    assert_non_null(strstr(err, "no chat template"));

    /* A string chat_template; special tokens as strings or {"content": ...}. */
    write_file(dir, "tokenizer_config.json",
               "{\"bos_token\": {\"content\": \"<B>\", \"lstrip\": false}, \"eos_token\": \"<E>\","
               " \"chat_template\": \"{{ bos_token }}{% for m in messages %}{{ m.role }}:{{ "
               "m.content }}{{ eos_token }}{% endfor %}{% if add_generation_prompt %}A:{% endif "
               "%}\"}");
    out = load_and_render(dir, NULL, CONV_SINGLE, &rc, err, sizeof err);
    assert_int_equal(rc, 0);
    assert_string_equal(out, "<B>user: Hi there! <E>A:");
    free(out);

    /* A list of named templates: "default" is used. */
    write_file(dir, "tokenizer_config.json",
               "{\"eos_token\": \"<E>\", \"chat_template\": [{\"name\": \"tool_use\", "
               "\"template\": \"TOOLS\"}, {\"name\": \"default\", \"template\": \"{{ "
               "messages|length }}{{ eos_token }}\"}]}");
    out = load_and_render(dir, NULL, CONV_MULTI, &rc, err, sizeof err);
    assert_int_equal(rc, 0);
    assert_string_equal(out, "3<E>");
    free(out);
    write_file(dir, "tokenizer_config.json",
               "{\"chat_template\": [{\"name\": \"tool_use\", \"template\": \"x\"}]}");
    out = load_and_render(dir, NULL, CONV_MULTI, &rc, err, sizeof err);
    assert_int_equal(rc, FY_ENOENT);
    assert_non_null(strstr(err, "default"));

    /* chat_template.jinja beside it wins over the config's. */
    write_file(dir, "tokenizer_config.json",
               "{\"eos_token\": \"<E>\", \"chat_template\": \"cfg\"}");
    write_file(dir, "chat_template.jinja", "file{{ eos_token }}\n");
    out = load_and_render(dir, NULL, CONV_SINGLE, &rc, err, sizeof err);
    assert_int_equal(rc, 0);
    assert_string_equal(out, "file<E>");
    free(out);

    /* An override file wins over both. */
    write_file(dir, "override.jinja", "{% for m in messages %}[{{ m.content|trim }}]{% endfor %}");
    assert_int_equal(fy_path_join(path, sizeof path, dir, "override.jinja"), 0);
    out = load_and_render(dir, path, CONV_MULTI, &rc, err, sizeof err);
    assert_int_equal(rc, 0);
    assert_string_equal(out, "[Hi there!][Hello.][What is 2+2?]");
    free(out);
    out = load_and_render(NULL, path, CONV_SINGLE, &rc, err, sizeof err);
    assert_int_equal(rc, 0);
    assert_string_equal(out, "[Hi there!]");
    free(out);

    /* A template we cannot render is refused at load, construct and line named. */
    write_file(dir, "chat_template.jinja",
               "{% for m in messages %}\n{{ m.content|wordwrap }}\n{% endfor %}");
    out = load_and_render(dir, NULL, CONV_SINGLE, &rc, err, sizeof err);
    assert_int_equal(rc, FY_ENOTSUP);
    assert_non_null(strstr(err, "unsupported filter 'wordwrap' at line 2"));
    assert_non_null(strstr(err, "chat_template.jinja"));
    unlink(path);
    assert_int_equal(fy_path_join(path, sizeof path, dir, "chat_template.jinja"), 0);
    unlink(path);

    /* A malformed tokenizer_config.json. */
    write_file(dir, "tokenizer_config.json", "{\"chat_template\": ");
    out = load_and_render(dir, NULL, CONV_SINGLE, &rc, err, sizeof err);
    assert_int_equal(rc, FY_EPARSE);
    write_file(dir, "tokenizer_config.json", "{\"chat_template\": 5}");
    out = load_and_render(dir, NULL, CONV_SINGLE, &rc, err, sizeof err);
    assert_int_equal(rc, FY_EPARSE);
    /* A missing override file. */
    out = load_and_render(dir, "/nonexistent/ferry.jinja", CONV_SINGLE, &rc, err, sizeof err);
    assert_int_equal(rc, FY_ENOENT);
    remove_dir(dir);
}

/* Content parts are joined; tool-call arguments given as a JSON string reach
 * the template as an object; malformed messages are refused by name. */
static void test_messages(void **state)
{
    (void)state;
    fy_chat_template *t;
    char err[512], *out = NULL;
    const char *src = "{% for m in messages %}{{ m.role }}={{ m.content }}"
                      "{% for c in m.tool_calls or [] %}|{{ c.function.arguments|tojson }}"
                      "{% endfor %};{% endfor %}{{ tools|length if tools else 'no tools' }}";
    assert_int_equal(fy_chat_template_new(src, strlen(src), NULL, NULL, &t, err, sizeof err), 0);
    static const struct {
        const char *messages;
        const char *want; /* NULL: FY_EINVAL with want_err */
        const char *want_err;
    } cases[] = {
        {"[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"a\"},"
         "{\"type\":\"text\",\"text\":\"b\"}]}]",
         "user=a\nb;no tools", NULL},
        {"[{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"1\",\"type\":"
         "\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"x\\\": [1, 2]}\"}}]}]",
         "assistant=None|{\"x\": [1, 2]};no tools", NULL},
        {"[{\"role\":\"assistant\",\"content\":\"\",\"tool_calls\":[{\"function\":{\"name\":"
         "\"f\",\"arguments\":\"not json\"}}]}]",
         "assistant=|\"not json\";no tools", NULL},
        {"[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":{}}]}]", NULL,
         "messages[0].content[0]"},
        {"[{\"content\":\"x\"}]", NULL, "messages[0].role"},
        {"[1]", NULL, "messages[0] is not an object"},
        {"[{\"role\":\"user\",\"content\":5}]", NULL, "messages[0].content"},
        {"{}", NULL, "messages must be an array"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        json_t *msgs = json_loads(cases[i].messages, 0, NULL);
        assert_non_null(msgs);
        int rc = fy_chat_template_render(t, msgs, NULL, 0, &out, NULL, err, sizeof err);
        if (cases[i].want) {
            if (rc || strcmp(out, cases[i].want) != 0) {
                fail_msg("case %zu: rc %d err [%s] got [%s] want [%s]", i, rc, err, out ? out : "",
                         cases[i].want);
            }
        } else if (rc != FY_EINVAL || !strstr(err, cases[i].want_err)) {
            fail_msg("case %zu: rc %d err [%s], want FY_EINVAL [%s]", i, rc, err,
                     cases[i].want_err);
        }
        free(out);
        out = NULL;
        json_decref(msgs);
    }
    json_t *msgs = json_loads("[]", 0, NULL), *tools = json_loads(TOOLS_JSON, 0, NULL);
    assert_int_equal(fy_chat_template_render(t, msgs, tools, 0, &out, NULL, err, sizeof err), 0);
    assert_string_equal(out, "1");
    free(out);
    json_decref(msgs);
    json_decref(tools);
    fy_chat_template_free(t);
}

/* ------------------------------------------------------------ live cross-check */

/* A copy of S with the date after each "Today Date: " blanked to "@". */
static char *blank_today(const char *s)
{
    char *r = strdup(s ? s : "");
    assert_non_null(r);
    static const char mark[] = "Today Date: ";
    for (char *p = strstr(r, mark); p; p = strstr(p, mark)) {
        p += sizeof mark - 1;
        char *end = strchr(p, '\n');
        if (!end) {
            end = p + strlen(p);
        }
        if (end > p) {
            *p = '@';
            memmove(p + 1, end, strlen(end) + 1);
        }
    }
    return r;
}

/* 1 when A and B are the same render, today's date aside. */
static int same_render(const char *a, const char *b)
{
    char *x = blank_today(a), *y = blank_today(b);
    int same = strcmp(x, y) == 0;
    free(x);
    free(y);
    return same;
}

/* Reads [[template, vars], ...] from argv[1]; writes [["OK", text] or
 * ["ERR", message], ...] to argv[2]. The globals are Hugging Face's:
 * raise_exception, and strftime_now on the local clock. Both renders'
 * "Today Date: ..." lines are compared with the date blanked (same_render),
 * so a run that straddles midnight still agrees; test_jinja checks our
 * strftime_now against the clock. */
static const char py_render[] =
    "import json, sys\n"
    "from jinja2.sandbox import ImmutableSandboxedEnvironment\n"
    "from datetime import datetime\n"
    "from jinja2.exceptions import TemplateError\n"
    "def raise_exception(m):\n"
    "    raise TemplateError(m)\n"
    "def strftime_now(f):\n"
    "    return datetime.now().strftime(f)\n"
    "def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):\n"
    "    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,"
    " sort_keys=sort_keys)\n"
    "env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,"
    " extensions=['jinja2.ext.loopcontrols'])\n"
    "env.filters['tojson'] = tojson\n"
    "env.globals['raise_exception'] = raise_exception\n"
    "env.globals['strftime_now'] = strftime_now\n"
    "res = []\n"
    "for t, v in json.load(open(sys.argv[1], encoding='utf-8')):\n"
    "    try:\n"
    "        res.append(['OK', env.from_string(t).render(**v)])\n"
    "    except Exception as e:\n"
    "        res.append(['ERR', str(e)])\n"
    "json.dump(res, open(sys.argv[2], 'w', encoding='utf-8'))\n";

/* The python that has jinja2: Debian's (python3-jinja2, installed by
 * deploy/install-deps.sh), else the first python3 on PATH. NULL if none. */
static const char *jinja2_python(void)
{
    static const char *const cands[] = {"/usr/bin/python3", "python3"};
    char cmd[128];
    for (size_t i = 0; i < sizeof cands / sizeof cands[0]; i++) {
        snprintf(cmd, sizeof cmd, "%s -c 'import jinja2' >/dev/null 2>&1", cands[i]);
        if (system(cmd) == 0) {
            return cands[i];
        }
    }
    return NULL;
}

/* Every family case through Python's jinja2 (one process) and through ours:
 * where jinja2 renders, ours must render the same bytes; where it fails,
 * ours must fail too. */
static void test_python_crosscheck(void **state)
{
    (void)state;
    const char *python = jinja2_python();
    if (!python) {
        printf("skipped: no python3 with jinja2 (Debian's python3-jinja2)\n");
        skip();
    }
    char dir[64], script[512], in[512], outp[512], cmd[2048];
    make_dir(dir, sizeof dir);
    assert_int_equal(fy_path_join(script, sizeof script, dir, "override.jinja"), 0);
    assert_int_equal(fy_path_join(in, sizeof in, dir, "tokenizer_config.json"), 0);
    assert_int_equal(fy_path_join(outp, sizeof outp, dir, "chat_template.jinja"), 0);
    write_file(dir, "override.jinja", py_render); /* names remove_dir cleans up */
    size_t n = sizeof family_cases / sizeof family_cases[0];
    json_t *batch = json_array();
    for (size_t i = 0; i < n; i++) {
        const struct family_case *c = &family_cases[i];
        json_t *vars = json_pack("{s:o,s:s,s:s,s:b,s:o}", "messages",
                                 json_loads(c->messages, 0, NULL), "bos_token", "<s>", "eos_token",
                                 "</s>", "add_generation_prompt", c->add_generation_prompt, "tools",
                                 json_loads(c->tools ? c->tools : "null", JSON_DECODE_ANY, NULL));
        assert_non_null(vars);
        assert_int_equal(json_array_append_new(batch, json_pack("[s,o]", c->tmpl, vars)), 0);
    }
    size_t nk = sizeof kwarg_cases / sizeof kwarg_cases[0];
    for (size_t i = 0; i < nk; i++) {
        json_t *vars = json_loads(kwarg_cases[i].vars, 0, NULL);
        assert_non_null(vars);
        assert_int_equal(
            json_array_append_new(batch, json_pack("[s,o]", kwarg_cases[i].tmpl, vars)), 0);
    }
    assert_int_equal(json_dump_file(batch, in, 0), 0);
    json_decref(batch);
    snprintf(cmd, sizeof cmd, "%s %s %s %s", python, script, in, outp);
    assert_int_equal(system(cmd), 0);
    json_t *res = json_load_file(outp, 0, NULL);
    assert_non_null(res);
    assert_int_equal(json_array_size(res), n + nk);
    for (size_t i = 0; i < n; i++) {
        const struct family_case *c = &family_cases[i];
        const char *status = json_string_value(json_array_get(json_array_get(res, i), 0));
        const char *py = json_string_value(json_array_get(json_array_get(res, i), 1));
        char err[512];
        int rc;
        char *ours = render_case(c, &rc, err, sizeof err);
        if (strcmp(status, "OK") == 0) {
            if (rc || !same_render(ours, py)) {
                fail_msg("case %zu (%s): jinja2 [%s], ours rc %d [%s] %s", i, c->family, py, rc,
                         ours ? ours : "", err);
            }
        } else if (!rc) {
            fail_msg("case %zu (%s): jinja2 failed (%s), ours rendered [%s]", i, c->family, py,
                     ours);
        }
        free(ours);
    }
    for (size_t i = 0; i < nk; i++) {
        const struct kwarg_case *c = &kwarg_cases[i];
        const char *status = json_string_value(json_array_get(json_array_get(res, n + i), 0));
        const char *py = json_string_value(json_array_get(json_array_get(res, n + i), 1));
        char err[512];
        int rc;
        char *ours = render_kwarg_case(c, &rc, err, sizeof err);
        if (strcmp(status, "OK") == 0 ? rc || !same_render(ours, py) : !rc) {
            fail_msg("%s: jinja2 %s [%s], ours rc %d [%s] %s", c->name, status, py, rc,
                     ours ? ours : "", err);
        }
        free(ours);
    }
    printf("cross-checked %zu cases against python jinja2\n", n + nk);
    json_decref(res);
    remove_dir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_families),        cmocka_unit_test(test_kwargs),
        cmocka_unit_test(test_testdata_llama2), cmocka_unit_test(test_load_sources),
        cmocka_unit_test(test_messages),        cmocka_unit_test(test_python_crosscheck),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
