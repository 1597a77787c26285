/* assets.h: the dashboard's static files, compiled into the binary.
 *
 * gateway/dash/embed.cmake writes the table at build time from every file
 * under gateway/dash/www (named by its path there, "index.html",
 * "app.js") and Debian's Chart.js ("vendor/chart.js"). Nothing is read from
 * disk at run time. */
#ifndef FY_GATEWAY_DASH_ASSETS_H
#define FY_GATEWAY_DASH_ASSETS_H

#include <stddef.h>

typedef struct {
    const char *path;         /* relative to www/, no leading '/' */
    const char *content_type; /* by extension */
    const char *etag;         /* "\"<16 hex of the SHA-256>\"", quoted as sent */
    const unsigned char *data;
    size_t len;
} fy_dash_asset;

extern const fy_dash_asset fy_dash_assets[];
extern const size_t fy_dash_n_assets;

/* The asset at PATH (relative, "app.js"), or NULL. */
const fy_dash_asset *fy_dash_asset_find(const char *path);

#endif
