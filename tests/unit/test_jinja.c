/* Unit tests for the Jinja-subset interpreter (runner/api/jinja.c and its
 * parts in runner/api/jinja/): every construct against expected strings
 * (cross-checked with Python's jinja2 3.1 under Hugging Face's settings when
 * they were written), whitespace control with and without
 * trim_blocks/lstrip_blocks, compile-time refusal of unsupported constructs
 * with their line, render errors, the limits on output, steps, working
 * memory and nesting, and the builtin tables (sorted, every name found, an
 * unknown one refused). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "common/err.h"
#include "runner/api/jinja.h"
#include "runner/api/jinja/jinja_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define HF_FLAGS (FY_JINJA_TRIM_BLOCKS | FY_JINJA_LSTRIP_BLOCKS)

struct render_case {
    const char *tmpl;
    const char *want;
};

/* Renders TMPL with VARS_JSON; returns the output (caller frees) or NULL
 * with *RC and ERR set. */
static char *render(const char *tmpl, const char *vars_json, unsigned flags,
                    const fy_jinja_limits *lim, int *rc, char *err, size_t errlen)
{
    fy_jinja *t = NULL;
    json_t *vars = vars_json ? json_loads(vars_json, 0, NULL) : NULL;
    char *out = NULL;
    if (vars_json) {
        assert_non_null(vars);
    }
    *rc = fy_jinja_compile(tmpl, strlen(tmpl), flags, &t, err, errlen);
    if (!*rc) {
        size_t len = 0;
        *rc = fy_jinja_render(t, vars, lim, &out, &len, err, errlen);
        if (!*rc) {
            assert_int_equal(len, strlen(out));
        } else {
            assert_null(out);
        }
    } else {
        assert_null(t);
    }
    fy_jinja_free(t);
    json_decref(vars);
    return out;
}

static void expect_output(const char *tmpl, const char *vars, unsigned flags, const char *want)
{
    char err[512];
    int rc;
    char *got = render(tmpl, vars, flags, NULL, &rc, err, sizeof err);
    if (rc) {
        fail_msg("template %s\n failed: %s (%s)", tmpl, err, fy_err_name(rc));
    }
    if (strcmp(got, want) != 0) {
        fail_msg("template %s\n got:  [%s]\n want: [%s]", tmpl, got, want);
    }
    free(got);
}

static void expect_error(const char *tmpl, const char *vars, int want_rc, const char *want_msg)
{
    char err[512];
    int rc;
    char *got = render(tmpl, vars, HF_FLAGS, NULL, &rc, err, sizeof err);
    if (!rc) {
        fail_msg("template %s\n rendered [%s], want error %s", tmpl, got, want_msg);
    }
    if (rc != want_rc || !strstr(err, want_msg)) {
        fail_msg("template %s\n error %s: %s\n want %s: %s", tmpl, fy_err_name(rc), err,
                 fy_err_name(want_rc), want_msg);
    }
}

static const char VARS[] =
    "{\"messages\": [{\"role\": \"system\", \"content\": \"sys\"}, {\"role\": \"user\", \"cont"
    "ent\": \"hi\"}, {\"role\": \"assistant\", \"content\": \"yo\", \"tool_calls\": null}], \""
    "s\": \"  Hello World  \", \"n\": 7, \"f\": 2.5, \"l\": [3, 1, 2], \"d\": {\"b\": 1, \"a\""
    ": [1, \"x\"]}, \"e\": \"\", \"z\": null, \"t\": true, \"u\": \"h\\u00e9llo w\\u00f6rld\"}";

static const struct render_case render_cases[] = {
    {"{{ 'a' ~ 1 ~ none }}", "a1None"},

    {"{{ 1 + 2 }}|{{ 7 // 2 }}|{{ -7 // 2 }}|{{ 7 % 3 }}|{{ -7 % 3 }}|{{ 7 / 2 }}|{{ 2 ** 8 }}|"
     "{{ 2 * 3 }}|{{ 'ab' * 3 }}",
     "3|3|-4|1|2|3.5|256|6|ababab"},

    {"{{ n - 10 }}|{{ f * 2 }}|{{ 0.1 + 0.2 }}|{{ 1e20 }}|{{ 1.5e-7 }}|{{ 100.0 }}|{{ -0.0 }}|{"
     "{ 3.14159 }}",
     "-3|5.0|0.30000000000000004|1e+20|1.5e-07|100.0|-0.0|3.14159"},

    {"{{ s.strip() }}|{{ s.lstrip() }}|{{ s.rstrip() }}|{{ s.upper() }}|{{ s.lower() }}|{{ s.ti"
     "tle() }}",
     "Hello World|Hello World  |  Hello World|  HELLO WORLD  |  hello world  |  Hello World  "},

    {"{{ 'a,b,,c'.split(',') }}|{{ ' a  b '.split() }}|{{ 'a b c'.split(' ', 1) }}|{{ 'aXbXc'.r"
     "eplace('X', '-') }}|{{ 'abc'.startswith('a') }}|{{ 'abc'.endswith(('x','c')) }}",
     "['a', 'b', '', 'c']|['a', 'b']|['a', 'b c']|a-b-c|True|True"},

    {"{{ s|trim }}|{{ s|length }}|{{ l|length }}|{{ d|length }}|{{ s|upper }}|{{ s|lower }}|{{ "
     "'hello WORLD-x'|title }}|{{ 'hELLO'|capitalize }}",
     "Hello World|15|3|2|  HELLO WORLD  |  hello world  |Hello World-X|Hello"},

    {"{{ l|first }}|{{ l|last }}|{{ l|join(',') }}|{{ l|join }}|{{ l|sort }}|{{ l|sort(reverse="
     "true) }}|{{ l|reverse|list }}|{{ 'abc'|reverse }}",
     "3|2|3,1,2|312|[1, 2, 3]|[3, 2, 1]|[2, 1, 3]|cba"},

    {"{{ d|tojson(indent=2) }}", "{\n"
                                 "  \"b\": 1,\n"
                                 "  \"a\": [\n"
                                 "    1,\n"
                                 "    \"x\"\n"
                                 "  ]\n"
                                 "}"},

    {"{{ x|default('dflt') }}|{{ z|default('dflt') }}|{{ e|default('dflt', true) }}|{{ x|d('D')"
     " }}",
     "dflt|None|dflt|D"},

    {"{{ n|string ~ '!' }}|{{ '42'|int + 1 }}|{{ 'x'|int }}|{{ 2.7|int }}|{{ '3.5'|float }}|{{ "
     "n|float }}|{{ l|list }}|{{ 'ab'|list }}",
     "7!|43|0|2|3.5|7.0|[3, 1, 2]|['a', 'b']"},

    {"{{ M|selectattr('role', 'equalto', 'user')|list }}|{{ M|rejectattr('role', 'eq', 'user')|"
     "map(attribute='role')|list }}|{{ M|map(attribute='content')|join('/') }}",
     "[]|[]|"},

    {"{{ [1,2,3,4]|select('odd')|list }}|{{ [1,2,3,4]|reject('even')|list }}|{{ ['a','B']|map('"
     "upper')|list }}|{{ [1,1,2]|unique|list }}|{{ [1,2,3]|sum }}|{{ [4,2,9]|max }}|{{ [4,2,9]|"
     "min }}",
     "[1, 3]|[1, 3]|['A', 'B']|[1, 2]|6|9|2"},

    {"{{ messages[0]['role'] }}|{{ messages[1].content }}|{{ messages[-1].role }}|{{ messages[1"
     ":]|length }}|{{ messages[:-1]|map(attribute='role')|join(',') }}|{{ l[::-1] }}|{{ u[1:4] "
     "}}|{{ u[-1] }}|{{ u|length }}",
     "system|hi|assistant|2|system,user|[2, 1, 3]|éll|d|11"},

    {"{{ x is defined }}|{{ n is defined }}|{{ z is none }}|{{ z is not none }}|{{ s is string "
     "}}|{{ n is number }}|{{ n is integer }}|{{ f is float }}|{{ d is mapping }}|{{ l is seque"
     "nce }}|{{ t is boolean }}|{{ n is odd }}|{{ n is even }}|{{ 9 is divisibleby 3 }}|{{ 'a' "
     "is in 'cat' }}|{{ x is undefined }}",
     "False|True|True|False|True|True|True|True|True|True|True|True|False|True|True|True"},

    {"{{ 1 in l }}|{{ 5 not in l }}|{{ 'b' in d }}|{{ 'ell' in s }}|{{ 1 < 2 < 3 }}|{{ 3 > 2 > "
     "2 }}|{{ 'a' < 'b' }}|{{ [1,2] < [1,3] }}|{{ 1 == 1.0 }}|{{ true == 1 }}|{{ none == none }"
     "}|{{ {'a':1} == {'a':1} }}",
     "True|True|True|True|True|False|True|True|True|True|True|True"},

    {"{{ not t }}|{{ t and 'yes' }}|{{ z or 'fallback' }}|{{ e and 'x' }}|{{ 'A' if t else 'B' "
     "}}|{{ 'A' if z else 'B' }}|{{ 'A' if z }}|",
     "False|yes|fallback||A|B||"},

    {"{% for m in messages %}{{ loop.index }}{{ loop.index0 }}{{ loop.first }}{{ loop.last }}{{"
     " loop.length }}{{ loop.revindex }}{{ loop.revindex0 }}:{{ m.role }} {% endfor %}",
     "10TrueFalse332:system 21FalseFalse321:user 32FalseTrue310:assistant "},

    {"{% for m in messages if m.role != 'system' %}{{ loop.index }}/{{ loop.length }}={{ m.role"
     " }} {% else %}none{% endfor %}",
     "1/2=user 2/2=assistant "},

    {"{% for i in range(5) %}{% if i == 3 %}{% break %}{% endif %}{% if i == 1 %}{% continue %}"
     "{% endif %}{{ i }}{% endfor %}|{{ range(2, 10, 3)|list }}|{{ range(5, 0, -2)|list }}",
     "02|[2, 5, 8]|[5, 3, 1]"},

    {"{% set ns = namespace(found=false, count=0) %}{% for m in messages %}{% if m.role == 'use"
     "r' %}{% set ns.found = true %}{% endif %}{% set ns.count = ns.count + 1 %}{% endfor %}{{ "
     "ns.found }} {{ ns.count }}",
     "True 3"},

    {"{% set x = 5 %}{% for i in [1,2] %}{% set x = i %}{{ x }}{% endfor %}{{ x }}|{% set blk %"
     "}in block {{ n }}{% endset %}{{ blk }}",
     "125|in block 7"},

    {"{% if n > 10 %}big{% elif n > 5 %}mid{% else %}small{% endif %}|{% if z %}a{% elif e %}b{"
     "% else %}c{% endif %}",
     "mid|c"},

    {"{{ messages[0]['content'] + '!' }}|{{ 'x' ~ messages|length }}|{{ (messages|length) - 1 }"
     "}|{{ messages|length - 1 }}|{{ -n }}|{{ -(n + 1) }}|{{ n|abs }}",
     "sys!|x3|2|2|-7|-8|7"},

    {"{{ 'aaa'.count('a') }}|{{ 'hello'.find('l') }}|{{ '-'.join(['a','b']) }}|{{ 'abc'.capital"
     "ize() }}|{{ u.upper() }}|{{ 'x\\ny'|indent(2) }}|{{ '<a&b>'|e }}|{{ 'one two'|wordcount }"
     "}",
     "3|2|a-b|Abc|HÉLLO WÖRLD|x\n"
     "  y|&lt;a&amp;b&gt;|2"},

    {"a  {{- 1 -}}  b", "a1b"},

    {"a\n"
     "  {%- if true -%}\n"
     "  x\n"
     "  {%- endif -%}\n"
     "  b",
     "axb"},

    {"a\n"
     "  {% if true %}\n"
     "  x\n"
     "  {% endif %}\n"
     "b",
     "a\n"
     "  x\n"
     "b"},

    {"  {% if true %}x{% endif %}  \n"
     "  y",
     "x  \n"
     "  y"},

    {"{# c #}a{#- c -#}  b\n"
     "  {# c #}\n"
     "c",
     "ab\n"
     "c"},

    {"a {%+ if true %}b{% endif +%}\n"
     "c",
     "a b\n"
     "c"},

    {"{% for i in [1,2] %}\n"
     "  {{ i }}\n"
     "{% endfor %}\n",
     "  1\n"
     "  2\n"},

    {"x\n"
     "\n",
     "x\n"},

    {"{{ 1 }}\n"
     "{{ 2 }}\n",
     "1\n"
     "2"},

    {"  {{ 1 }}  \n", "  1  "},

    {"{{ {'a': {'b': 1}} }}", "{'a': {'b': 1}}"},

    {"{{ {'a': {'b': 1}}['a']['b'] }}", "1"},

    {"{%- set x = {'k': {'j': 2}} -%}{{ x.k.j }}", "2"},

    {"{{ 'a' }}{# multi\n"
     "line\n"
     "comment #}{{ 'b' }}",
     "ab"},

    {"line1\r\n"
     "{% if true %}\r\n"
     "x{% endif %}\r\n",
     "line1\n"
     "x"},

};

static void test_constructs(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof render_cases / sizeof render_cases[0]; i++) {
        expect_output(render_cases[i].tmpl, VARS, HF_FLAGS, render_cases[i].want);
    }
}

/* Whitespace control without Hugging Face's options: only the markers act. */
static void test_whitespace_plain(void **state)
{
    (void)state;
    static const struct render_case cases[] = {
        {"a\n{% if true %}\nx\n{% endif %}\nb", "a\n\nx\n\nb"},
        {"a\n  {%- if true %}x{% endif -%}  \n  b", "axb"},
        {"a\n  {%- if true %}x{% endif %}  \n  b", "ax  \n  b"},
        {"a {{- 1 }} b {{ 2 -}} c", "a1 b 2c"},
        {"a  {#- comment -#}  b", "ab"},
        {"x\n", "x"}, /* one trailing newline is dropped */
        {"x\n\n", "x\n"},
        {"{% for i in [1, 2] %}\n{{ i }}\n{% endfor %}", "\n1\n\n2\n"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        expect_output(cases[i].tmpl, NULL, 0, cases[i].want);
    }
}

/* trim_blocks + lstrip_blocks (Hugging Face's environment). */
static void test_whitespace_hf(void **state)
{
    (void)state;
    static const struct render_case cases[] = {
        {"a\n{% if true %}\nx\n{% endif %}\nb", "a\nx\nb"},
        {"a\n  {% if true %}\n  x\n  {% endif %}\nb", "a\n  x\nb"},
        {"  {% if true %}x{% endif %}  \n  y", "x  \n  y"},
        {"a\n  {# c #}\nb", "a\nb"},
        {"a {%+ if true %}b{% endif +%}\nc", "a b\nc"},
        {"x {% if true %}  {% endif %}y", "x   y"},
        {"{{ 1 }}\n{{ 2 }}\n", "1\n2"}, /* trim_blocks leaves {{ }} alone */
        {"{% for i in [1, 2] %}\n  {{ i }}\n{% endfor %}\n", "  1\n  2\n"},
        {"a\n  {%- if true -%}\n  x\n  {%- endif -%}\n  b", "axb"},
        {"line1\r\n{% if true %}\r\nx{% endif %}\r\n", "line1\nx"},
        {"{{ 'a' }}{# multi\nline #}{{ 'b' }}", "ab"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        expect_output(cases[i].tmpl, NULL, HF_FLAGS, cases[i].want);
    }
}

/* Unsupported constructs are refused at compile time, named, with the line. */
static void test_compile_errors(void **state)
{
    (void)state;
    static const struct {
        const char *tmpl;
        int rc;
        const char *msg;
    } cases[] = {
        {"a\nb\n{{ x | xyz }}", FY_ENOTSUP, "unsupported filter 'xyz' at line 3"},
        {"{% if x is frobbed %}{% endif %}", FY_ENOTSUP, "unsupported test 'frobbed' at line 1"},
        {"\n{{ lipsum(3) }}", FY_ENOTSUP, "unsupported function 'lipsum' at line 2"},
        {"{{ messages.append(1) }}", FY_ENOTSUP, "unsupported method 'append' at line 1"},
        {"{% macro m() %}{% endmacro %}", FY_ENOTSUP, "unsupported tag 'macro' at line 1"},
        {"{% include 'x' %}", FY_ENOTSUP, "unsupported tag 'include'"},
        {"{% for x in y recursive %}{% endfor %}", FY_ENOTSUP, "unsupported recursive loop"},
        {"{% set a, b = 1, 2 %}", FY_ENOTSUP, "unsupported tuple assignment"},
        {"{{ x()() }}", FY_ENOTSUP, "unsupported"},
        {"{% if x %}\nno end", FY_EPARSE, "'if' block is never closed at line 1"},
        {"{% endfor %}", FY_EPARSE, "unexpected 'endfor'"},
        {"{{ 1 +  }}", FY_EPARSE, "expected an expression"},
        {"{{ 'abc }}", FY_EPARSE, "unterminated string literal"},
        {"{{ 1 ", FY_EPARSE, "unclosed {{ tag"},
        {"{# never closed", FY_EPARSE, "unclosed comment"},
        {"{% break %}", FY_EPARSE, "'break' outside a loop"},
        {"{{ a ; b }}", FY_EPARSE, "unexpected character ';'"},
        {"{{ 99999999999999999999 }}", FY_ENOTSUP, "too large"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char err[256];
        fy_jinja *t = NULL;
        int rc =
            fy_jinja_compile(cases[i].tmpl, strlen(cases[i].tmpl), HF_FLAGS, &t, err, sizeof err);
        if (rc != cases[i].rc || !strstr(err, cases[i].msg)) {
            fail_msg("template %s\n compile: %s: %s\n want %s: %s", cases[i].tmpl, fy_err_name(rc),
                     err, fy_err_name(cases[i].rc), cases[i].msg);
        }
        assert_null(t);
    }
}

static void test_render_errors(void **state)
{
    (void)state;
    expect_error("{{ raise_exception('Roles must alternate') }}", NULL, FY_EINVAL,
                 FY_JINJA_RAISED_PREFIX "Roles must alternate");
    expect_error("a\n{{ x.y }}", NULL, FY_EINVAL, "'x' is undefined (template line 2)");
    expect_error("{{ x + 1 }}", NULL, FY_EINVAL, "'x' is undefined");
    expect_error("{{ 1 + 'a' }}", NULL, FY_EINVAL,
                 "unsupported operand type(s) for +: 'int' and 'str'");
    expect_error("{{ 1 // 0 }}", NULL, FY_EINVAL, "division or modulo by zero");
    expect_error("{{ n.strip() }}", "{\"n\": 1}", FY_EINVAL,
                 "'int' object has no attribute 'strip'");
    expect_error("{{ 'a' < 1 }}", NULL, FY_EINVAL, "'<' not supported between instances");
    expect_error("{% set d = {} %}{% set d.x = 1 %}", NULL, FY_EINVAL, "not a namespace");
    expect_error("{{ x|tojson }}", NULL, FY_EINVAL, "not JSON serializable");
    expect_error("{{ m[9]['role'] }}", "{\"m\": []}", FY_EINVAL, "undefined");
    expect_error("{% for a, b in [1] %}{% endfor %}", NULL, FY_EINVAL, "cannot unpack");
    expect_error("{{ 9223372036854775807 + 1 }}", NULL, FY_EINVAL, "integer overflow");
    expect_error("{{ 1 in 2 }}", NULL, FY_EINVAL, "not iterable");
    expect_error("{{ range(1, 2, 0) }}", NULL, FY_EINVAL, "must not be zero");
    expect_error("{{ [1, 2][::0] }}", NULL, FY_EINVAL, "slice step cannot be zero");
}

/* Every resource a template can consume is capped: it fails cleanly. */
static void test_limits(void **state)
{
    (void)state;
    char err[256];
    int rc;
    fy_jinja_limits lim = {.max_output = 4096, .max_steps = 100000, .max_work_bytes = 1 << 20};
    fy_jinja_limits steps_only = {.max_steps = 100000};
    /* Output over the cap. */
    char *out = render("{% for i in range(10000) %}0123456789{% endfor %}", NULL, HF_FLAGS, &lim,
                       &rc, err, sizeof err);
    assert_null(out);
    assert_int_equal(rc, FY_ETOOBIG);
    assert_non_null(strstr(err, "rendered output exceeds"));
    /* Nested loops: 10^10 iterations stop at the step limit, not after. */
    out = render("{% for i in range(1000) %}{% for j in range(1000) %}{% for k in range(1000) %}"
                 "{% endfor %}{% endfor %}{% endfor %}",
                 NULL, HF_FLAGS, &steps_only, &rc, err, sizeof err);
    assert_null(out);
    assert_int_equal(rc, FY_ETOOBIG);
    assert_non_null(strstr(err, "steps"));
    /* A huge list or string is refused before it is built. */
    out = render("{{ range(1000000000)|length }}", NULL, HF_FLAGS, &lim, &rc, err, sizeof err);
    assert_int_equal(rc, FY_ETOOBIG);
    out = render("{{ ('x' * 1000000000)|length }}", NULL, HF_FLAGS, &lim, &rc, err, sizeof err);
    assert_int_equal(rc, FY_ETOOBIG);
    out = render("{{ ([1] * 1000000000)|length }}", NULL, HF_FLAGS, &lim, &rc, err, sizeof err);
    assert_int_equal(rc, FY_ETOOBIG);
    /* Doubling a string in a namespace: capped by the string and work limits. */
    out = render("{% set ns = namespace(s='ab') %}{% for i in range(64) %}"
                 "{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}",
                 NULL, HF_FLAGS, &lim, &rc, err, sizeof err);
    assert_null(out);
    assert_int_equal(rc, FY_ETOOBIG);
    /* Building many lists: the cumulative work budget. */
    out = render("{% for i in range(10000) %}{% set l = range(100) %}{% endfor %}", NULL, HF_FLAGS,
                 &lim, &rc, err, sizeof err);
    assert_null(out);
    assert_int_equal(rc, FY_ETOOBIG);
    assert_non_null(strstr(err, "working memory"));
    /* Under the limits the same shapes succeed. */
    out = render("{% for i in range(100) %}0123456789{% endfor %}", NULL, HF_FLAGS, &lim, &rc, err,
                 sizeof err);
    assert_int_equal(rc, 0);
    assert_int_equal(strlen(out), 1000);
    free(out);
}

/* Nesting deeper than FY_JINJA_MAX_DEPTH is refused at compile time, and a
 * template over FY_JINJA_MAX_SOURCE too. */
static void test_depth_and_size(void **state)
{
    (void)state;
    char err[256];
    fy_jinja *t = NULL;
    size_t n = 10000;
    char *src = malloc(n * 2 + 16);
    assert_non_null(src);
    size_t o = 0;
    src[o++] = '{';
    src[o++] = '{';
    for (size_t i = 0; i < n; i++) {
        src[o++] = '(';
    }
    src[o++] = '1';
    for (size_t i = 0; i < n; i++) {
        src[o++] = ')';
    }
    src[o++] = '}';
    src[o++] = '}';
    assert_int_equal(fy_jinja_compile(src, o, HF_FLAGS, &t, err, sizeof err), FY_ETOOBIG);
    assert_non_null(strstr(err, "nests deeper"));
    free(src);

    {
        size_t m = 4096;
        char *deep = malloc(m * 16);
        assert_non_null(deep);
        size_t k = 0;
        for (size_t i = 0; i < m; i++) {
            k += (size_t)sprintf(deep + k, "{%% if x %%}");
        }
        assert_int_equal(fy_jinja_compile(deep, k, HF_FLAGS, &t, err, sizeof err), FY_ETOOBIG);
        free(deep);
    }

    char *big = malloc(FY_JINJA_MAX_SOURCE + 1);
    assert_non_null(big);
    memset(big, 'a', FY_JINJA_MAX_SOURCE + 1);
    assert_int_equal(fy_jinja_compile(big, FY_JINJA_MAX_SOURCE + 1, HF_FLAGS, &t, err, sizeof err),
                     FY_ETOOBIG);
    free(big);
    /* Just under the depth limit compiles and renders. */
    expect_output("{{ ((((((((((1)))))))))) + [[[[[[2]]]]]][0][0][0][0][0][0] }}", NULL, 0, "3");
}

/* A compiled template is not changed by rendering: the same result twice, and
 * variables set in one render do not leak into the next. */
static void test_render_is_pure(void **state)
{
    (void)state;
    const char *src = "{% if seen is defined %}leak{% endif %}{% set seen = 1 %}"
                      "{% set ns = namespace(c=0) %}{% for i in [1, 2] %}{% set ns.c = ns.c + i %}"
                      "{% endfor %}{{ ns.c }}";
    fy_jinja *t;
    char err[256], *a, *b;
    assert_int_equal(fy_jinja_compile(src, strlen(src), HF_FLAGS, &t, err, sizeof err), 0);
    assert_int_equal(fy_jinja_render(t, NULL, NULL, &a, NULL, err, sizeof err), 0);
    assert_int_equal(fy_jinja_render(t, NULL, NULL, &b, NULL, err, sizeof err), 0);
    assert_string_equal(a, "3");
    assert_string_equal(b, "3");
    free(a);
    free(b);
    fy_jinja_free(t);
}

/* Checks one builtin table: names strictly sorted (the finder binary
 * searches), each found at its index + 1 (also when not NUL-terminated),
 * and near misses not found. */
static void check_table(const char *const *names, size_t n, int (*find)(const char *, size_t))
{
    assert_true(n > 0);
    for (size_t i = 0; i < n; i++) {
        char buf[64];
        size_t len = strlen(names[i]);
        assert_true(len + 2 < sizeof buf);
        if (i > 0) {
            assert_true(strcmp(names[i - 1], names[i]) < 0);
        }
        assert_int_equal(find(names[i], len), (int)i + 1);
        memcpy(buf, names[i], len);
        memcpy(buf + len, "zz", 3);
        assert_int_equal(find(buf, len), (int)i + 1);
        if (!(i + 1 < n && strcmp(names[i + 1], buf) == 0)) {
            assert_int_equal(find(buf, len + 2), 0);
        }
    }
    assert_int_equal(find("", 0), 0);
    assert_int_equal(find("no_such_builtin", 15), 0);
    assert_int_equal(find("abs\0x", 5), 0);
}

/* The filter table: sorted, complete, and every name usable in a template;
 * a name not in it is refused when compiling, and by map() when rendering. */
static void test_filter_table(void **state)
{
    (void)state;
    size_t n;
    const fy_jinja_filter *f = fy_jinja__filters(&n);
    const char *names[64];
    assert_true(n <= sizeof names / sizeof names[0]);
    for (size_t i = 0; i < n; i++) {
        names[i] = f[i].name;
        assert_non_null(f[i].fn);
        char src[96], err[256];
        snprintf(src, sizeof src, "{{ x | %s }}", f[i].name);
        fy_jinja *t = NULL;
        assert_int_equal(fy_jinja_compile(src, strlen(src), 0, &t, err, sizeof err), 0);
        fy_jinja_free(t);
    }
    check_table(names, n, fy_jinja__find_filter);
    assert_int_equal(fy_jinja__find_filter("upper", 5), fy_jinja__find_filter("upperx", 5));
    expect_error("{{ x | frob }}", NULL, FY_ENOTSUP, "unsupported filter 'frob' at line 1");
    expect_error("{{ [1] | map('frob') | list }}", NULL, FY_EINVAL,
                 "map needs attribute= or a supported filter name");
    expect_output("{{ ['a', 'b'] | map('upper') | join(',') }}", NULL, 0, "A,B");
    expect_output("{{ 'a<b' | e }}|{{ none | d('x') }}", NULL, 0, "a&lt;b|None");
    /* The key that cannot be ordered is named after its type, not freed first. */
    expect_error("{{ [1, 'a'] | sort }}", NULL, FY_EINVAL,
                 "sort: values of types 'int' and 'str' cannot be ordered");
}

/* The test table: sorted, complete, and every name usable after "is"; a
 * name not in it is refused when compiling, and by select() when rendering. */
static void test_test_table(void **state)
{
    (void)state;
    size_t n;
    const fy_jinja_test *t = fy_jinja__tests(&n);
    const char *names[64];
    assert_true(n <= sizeof names / sizeof names[0]);
    for (size_t i = 0; i < n; i++) {
        names[i] = t[i].name;
        assert_non_null(t[i].fn);
        char src[96], err[256];
        snprintf(src, sizeof src, "{{ x is %s }}", t[i].name);
        fy_jinja *tmpl = NULL;
        assert_int_equal(fy_jinja_compile(src, strlen(src), 0, &tmpl, err, sizeof err), 0);
        fy_jinja_free(tmpl);
    }
    check_table(names, n, fy_jinja__find_test);
    expect_error("{{ x is frob }}", NULL, FY_ENOTSUP, "unsupported test 'frob' at line 1");
    expect_error("{{ [1] | select('frob') | list }}", NULL, FY_EINVAL, "unsupported test 'frob'");
    expect_error("{{ 'a' is odd }}", NULL, FY_EINVAL, "test 'odd' needs an integer, got str");
    expect_output("{{ [1, 2, 3] | select('odd') | join(',') }}|{{ 2 is <= 3 }}", NULL, 0,
                  "1,3|True");
}

/* The method and global function tables: sorted and complete; a method
 * called on a type without it fails at render time with Python's message. */
static void test_method_function_tables(void **state)
{
    (void)state;
    static const char *const methods[] = {
        "capitalize", "count",      "endswith", "find",   "get",     "items",
        "join",       "keys",       "lower",    "lstrip", "replace", "rstrip",
        "split",      "startswith", "strip",    "title",  "upper",   "values",
    };
    static const char *const functions[] = {"dict", "namespace", "raise_exception", "range",
                                            "strftime_now"};
    check_table(methods, sizeof methods / sizeof methods[0], fy_jinja__find_method);
    check_table(functions, sizeof functions / sizeof functions[0], fy_jinja__find_function);
    expect_error("{{ {'a': 1}.strip() }}", NULL, FY_EINVAL,
                 "'dict' object has no attribute 'strip'");
    expect_error("{{ 'a'.keys() }}", NULL, FY_EINVAL, "'str' object has no attribute 'keys'");
    expect_error("{{ 'a'.count(1) }}", NULL, FY_EINVAL, "count expects a string argument");
    expect_error("{{ dict(1) }}", NULL, FY_EINVAL, "dict() takes keyword arguments or a dict");
    expect_output("{{ ' a '.strip() }}|{{ {'k': 2}.get('k') }}|{{ range(3) | list }}", NULL, 0,
                  "a|2|[0, 1, 2]");

    /* A global function's name is defined and callable, as in Jinja2, unless
     * a variable shadows it; other names and attributes are not. */
    expect_output("{{ strftime_now is defined }}|{{ strftime_now is not defined }}|{{ range is "
                  "undefined }}|{{ raise_exception is callable }}|{{ frob is defined }}|{{ d."
                  "range is defined }}",
                  "{\"d\": {}}", 0, "True|False|False|True|False|False");
    expect_output("{{ range is callable }}|{{ range is defined }}", "{\"range\": 1}", 0,
                  "False|True");
    expect_output("{% set strftime_now = none %}{{ strftime_now is none }}", NULL, 0, "True");

    /* Llama 3.2's date line, today's date in the C locale as Python's
     * datetime.now().strftime writes it (checked around the render, in case
     * it crosses midnight). */
    char before[32], after[32], want[64];
    time_t now = time(NULL);
    struct tm tm;
    strftime(before, sizeof before, "%d %b %Y", localtime_r(&now, &tm));
    const char *src = "{%- if strftime_now is defined %}{%- set date_string = strftime_now(\"%d "
                      "%b %Y\") %}{%- else %}{%- set date_string = \"26 Jul 2024\" %}{%- endif "
                      "%}Today Date: {{ date_string }}";
    char err[512];
    int rc;
    char *out = render(src, NULL, HF_FLAGS, NULL, &rc, err, sizeof err);
    assert_int_equal(rc, 0);
    now = time(NULL);
    strftime(after, sizeof after, "%d %b %Y", localtime_r(&now, &tm));
    snprintf(want, sizeof want, "Today Date: %s", before);
    if (strcmp(out, want) != 0) {
        snprintf(want, sizeof want, "Today Date: %s", after);
        assert_string_equal(out, want);
    }
    free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_constructs),
        cmocka_unit_test(test_whitespace_plain),
        cmocka_unit_test(test_whitespace_hf),
        cmocka_unit_test(test_compile_errors),
        cmocka_unit_test(test_render_errors),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_depth_and_size),
        cmocka_unit_test(test_render_is_pure),
        cmocka_unit_test(test_filter_table),
        cmocka_unit_test(test_test_table),
        cmocka_unit_test(test_method_function_tables),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
