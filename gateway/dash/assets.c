/* assets.c: lookups in the embedded table (assets.h). */
#include "gateway/dash/assets.h"

#include <string.h>

const fy_dash_asset *fy_dash_asset_find(const char *path)
{
    for (size_t i = 0; i < fy_dash_n_assets; i++) {
        if (strcmp(fy_dash_assets[i].path, path) == 0) {
            return &fy_dash_assets[i];
        }
    }
    return NULL;
}
