/* jsonschema.h: a JSON Schema compiled to a grammar whose sentences are
 * exactly JSON texts the schema accepts (within the subset below), for
 * constrained decoding (runner/engine/grammar.h).
 *
 * The subset. Every keyword not listed is refused with its JSON pointer,
 * never ignored:
 *   type (a name or a list; "null" in a list is how a value is nullable, and
 *     OpenAPI's nullable: true is taken too), enum, const;
 *   objects: properties (written in the schema's order), required,
 *     additionalProperties (false, true, or a schema);
 *   arrays: items, prefixItems, minItems, maxItems;
 *   strings: minLength, maxLength (in characters), pattern (runner/api/regex.h's
 *     subset, matched against the whole string), format: date, date-time, uuid;
 *   integers: minimum, maximum, exclusiveMinimum, exclusiveMaximum;
 *   numbers: minimum / exclusiveMinimum of 0 (non-negative numbers);
 *   combinations: anyOf, oneOf (generated as anyOf: overlapping branches
 *     are the schema author's to avoid), allOf with one member;
 *   references: $ref to "#", "#/$defs/NAME" or "#/definitions/NAME" (and any
 *     JSON pointer into the document), recursion included;
 *   annotations, accepted and without effect: title, description, default,
 *     examples, $schema, $id, $comment, deprecated, readOnly, writeOnly,
 *     $defs, definitions.
 *
 * What is generated, where the schema leaves a choice:
 *   - properties that additionalProperties allows but the schema does not
 *     name are never written when the schema names any (an object with only
 *     its named properties is valid either way); a schema with no properties
 *     and additionalProperties true or a schema is a map with string keys;
 *   - whitespace is at most one space, or a newline and up to 16 spaces,
 *     between tokens, so every output is finite when the schema bounds its
 *     strings and arrays;
 *   - integers without bounds have at most 15 digits and numbers at most 15
 *     digits before and after the point and a two-digit exponent, so every
 *     one is exact in a double;
 *   - dates are real days, but February 29 is never written; times have no
 *     leap second; date-time separates with "T".
 *
 * Bounded work: the schema's serialized size (FY_JSONSCHEMA_MAX_BYTES), its
 * nesting (FY_JSONSCHEMA_MAX_DEPTH) and the grammar it needs
 * (FY_GRAMMAR_MAX_RULES / _ELEMENTS) are capped; each cap is its own error. */
#ifndef FY_API_JSONSCHEMA_H
#define FY_API_JSONSCHEMA_H

#include "runner/engine/grammar.h"

#include <jansson.h>
#include <stddef.h>

/* Why a schema was refused: the JSON pointer of the keyword at fault ("" for
 * the root) and a sentence naming it. */
typedef struct {
    char pointer[256];
    char message[384];
} fy_jsonschema_error;

/* Adds to B a rule matching the JSON texts SCHEMA (borrowed) accepts, with
 * whitespace as above; STRICT is OpenAI's json_schema.strict (it changes
 * nothing the subset generates: additionalProperties is never generated
 * unless asked for; kept for the error messages). Returns the rule id, or
 * FY_EINVAL (a keyword outside the subset, a malformed schema, an
 * unsatisfiable one), FY_ELIMIT (a cap), FY_ENOMEM, with E filled. */
int fy_jsonschema_compile(fy_gbuild *b, const json_t *schema, int strict, fy_jsonschema_error *e);

/* A rule matching any JSON value (OBJECT_ONLY: any JSON object), with the
 * same whitespace; for response_format json_object. Shares rules with
 * fy_jsonschema_compile calls on the same builder only by coincidence. */
int fy_jsonschema_any(fy_gbuild *b, int object_only);

/* The optional whitespace between JSON tokens that both use, as a rule. */
int fy_jsonschema_ws(fy_gbuild *b);

#endif
