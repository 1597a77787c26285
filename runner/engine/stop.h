/* stop.h: stop strings matched on streamed text across token boundaries.
 *
 * Text arrives in pieces (each valid UTF-8, from the incremental
 * detokenizer). The matcher emits only text that can no longer be part of a
 * stop string: a suffix that is a prefix of some stop string is held back
 * until the next piece decides. When a stop string appears, the text before
 * it is emitted and the stop string and everything after it are dropped, so
 * a stop string is never emitted. Because stop strings and the text are
 * valid UTF-8, every cut falls on a character boundary. */
#ifndef FY_ENGINE_STOP_H
#define FY_ENGINE_STOP_H

#include "common/buf.h"
#include "common/utf8.h"

#include <stddef.h>

#define FY_STOP_MAX       16  /* stop strings per request */
#define FY_STOP_MAX_BYTES 256 /* bytes of one stop string */

typedef struct {
    char **stops;
    size_t *lens;
    int n;
    fy_buf held; /* text not yet emitted */
} fy_stop;

/* Copies STOPS[0..N). Returns 0, FY_EINVAL (empty, too long, not UTF-8, too
 * many) or FY_ENOMEM. N == 0 is a matcher that emits everything at once. */
int fy_stop_init(fy_stop *st, const char *const *stops, int n);
void fy_stop_free(fy_stop *st);

/* Feeds TEXT[0..LEN); appends the text now final to OUT. Returns 1 when a
 * stop string matched (nothing more will be emitted), 0, or FY_ENOMEM /
 * FY_ETOOBIG (OUT's cap). */
int fy_stop_push(fy_stop *st, const char *text, size_t len, fy_buf *out);

/* End of the stream without a stop string: the held text is final. */
int fy_stop_flush(fy_stop *st, fy_buf *out);

#endif
