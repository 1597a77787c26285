/* datadir.c: writing the files of a data directory (see datadir.h). */
#include "gateway/datadir.h"

#include "common/err.h"
#include "common/fsutil.h"

#include <string.h>

int fy_gw_datadir_secret(const char *name)
{
    size_t n = strlen(name);
    return strcmp(name, FY_GW_ADMIN_TOKEN) == 0 || (n > 4 && strcmp(name + n - 4, ".key") == 0);
}

int fy_gw_datadir_write(const char *dir, const char *name, const void *data, size_t len, char *err,
                        size_t errlen)
{
    char path[4096];
    int rc = fy_path_join(path, sizeof path, dir, name);
    if (rc == 0) {
        rc = fy_file_write_atomic(path, data, len, fy_gw_datadir_secret(name) ? 0600 : 0644);
    }
    return rc ? fy_fail(err, errlen, rc, "cannot write %s/%s: %s", dir, name, fy_strerror(rc)) : 0;
}
