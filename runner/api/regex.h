/* regex.h: a regular expression (JSON Schema's "pattern", vLLM's
 * structured_outputs.regex) compiled into a rule of a grammar builder
 * (runner/engine/grammar.h), so that constrained decoding can only produce
 * strings the expression matches.
 *
 * The pattern is UTF-8 and treated as anchored at both ends. The supported
 * subset, exactly:
 *
 *   literals      any UTF-8 character other than the syntax characters
 *                 \ . * + ? ( ) [ ] { } | ^ $; a '{' that does not start a
 *                 quantifier and a '}' are literals (as in PCRE).
 *   .             any character except \n (U+000A).
 *   escapes       \\ \. \* \+ \? \( \) \[ \] \{ \} \| \^ \$ \/ \- and any
 *                 other escaped ASCII punctuation (\" \# \& \~ \  ...: what
 *                 Python's re.escape writes) for the character itself;
 *                 \n \t \r \f \v (U+000B) \0 (U+0000, not followed by a
 *                 digit); \xXX (two hex digits); \uXXXX (four hex digits; a
 *                 high surrogate followed by \uXXXX of a low surrogate is one
 *                 code point, a lone surrogate is refused).
 *   shorthands    \d = [0-9], \w = [A-Za-z0-9_], \s = [ \t\n\r\f\v], and
 *                 \D \W \S their complements (ASCII meanings; the
 *                 complements hold every non-ASCII code point).
 *   classes       [...] and [^...] of characters, ranges a-b, the escapes
 *                 above (inside a class \b is U+0008) and the shorthands; a
 *                 '-' first or last is a literal. Negation is over all of
 *                 Unicode but the surrogates. A class matching nothing
 *                 ([^\s\S]) makes its branch match nothing.
 *   groups        ( ), (?: ), (?<name> ) and (?P<name> ), all plain groups.
 *   alternation   |, empty alternatives included ("a|", "(|b)").
 *   quantifiers   * + ? {n} {n,} {n,m} and their lazy forms (*? +? ?? {n,m}?
 *                 ...: the same language, so the same grammar).
 *   anchors       ^ as the pattern's first byte and $ as its last (outside
 *                 any group), both ignored.
 *
 * Refused with FY_EINVAL, ERR naming the construct and its byte offset:
 * backreferences (\1..\9, \k<name>, (?P=name)), lookaround ((?= (?! (?<=
 * (?<!), \b and \B, other anchors (\A \z \Z \G, ^ or $ anywhere else),
 * possessive quantifiers (*+ ++ ?+ {n}+), inline flags ((?i) (?i: ...),
 * atomic groups, comments, conditionals, recursion, branch reset, Unicode
 * property escapes (\p{..} \P{..}), POSIX classes ([:alpha:]), any other
 * escape of a letter or digit (\a \e \cX \h \R \Q ...), an escaped
 * control or non-ASCII character, octal escapes (\01), '{,m}', unbalanced
 * ( ) [ ], a class starting with ']' (PCRE and JavaScript read it
 * differently), a range out of order, a range with a shorthand end
 * ([\d-z]), a quantifier with nothing to repeat (also one right after
 * another: a**), {n,m} with n > m, invalid UTF-8, and a pattern no string
 * matches.
 *
 * Generation: an unbounded (or bounded) repetition of something that can
 * match the empty string is rewritten to repeat its non-empty part from 0
 * ((a?)* is (a)*), so the grammar never loops on nothing; each construct is
 * built once and referenced, so the grammar grows with the pattern, not with
 * its expansion. Adjacent repetitions of one character or class merge
 * (a{0,5}a{2} is a{2,7}). Other ambiguous patterns (a{0,500}b?a{0,500}) may
 * need more live parse stacks than FY_GRAMMAR_MAX_STACKS, past which the
 * parse state drops some: what it allows stays a subset of the language, but
 * a long enough string of the language may be refused. */
#ifndef FY_API_REGEX_H
#define FY_API_REGEX_H

#include <stddef.h>

#include "runner/engine/grammar.h"

#define FY_REGEX_MAX_LEN    4096  /* pattern bytes */
#define FY_REGEX_MAX_REPEAT 10000 /* n and m of {n}, {n,} and {n,m} */
#define FY_REGEX_MAX_DEPTH  32    /* nested groups */

typedef enum { FY_REGEX_RAW = 0, FY_REGEX_JSON_STRING = 1 } fy_regex_mode;

/* Adds to B a new rule matching exactly the strings PATTERN[0..LEN) fully
 * matches, and puts its id in *RULE.
 *
 * RAW: the rule's bytes are the string itself (UTF-8).
 * JSON_STRING: the rule's bytes are the string as it appears between the
 * quotes of a JSON string, in one spelling per character: '"' is \", '\' is
 * \\, U+0008 \b, U+0009 \t, U+000A \n, U+000C \f, U+000D \r, the other
 * characters below U+0020 \u00xx (lowercase hex), every other character raw
 * UTF-8 (so '/' and U+007F are raw, and no \u escape is ever optional).
 *
 * Returns the rule id (>= 0, also in *RULE), or FY_EINVAL with ERR naming the
 * construct and its byte offset ("pattern: lookahead '(?=' at offset 3 is not
 * supported"), FY_ELIMIT past FY_REGEX_MAX_LEN, FY_REGEX_MAX_REPEAT or
 * FY_REGEX_MAX_DEPTH, FY_ENOMEM, or the builder's error (FY_ELIMIT past its
 * rule or element caps; then B's error is sticky, see grammar.h). On an error
 * B may hold unused rules; *RULE is left alone. */
int fy_regex_compile(fy_gbuild *b, const char *pattern, size_t len, fy_regex_mode mode, int *rule,
                     char *err, size_t errlen);

#endif
