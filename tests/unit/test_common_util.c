/* common/fsutil and common/secret. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "common/err.h"
#include "common/fsutil.h"
#include "common/secret.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void test_files(void **state)
{
    (void)state;
    char dir[] = "/tmp/fy-fs-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char sub[256], path[256];
    snprintf(sub, sizeof sub, "%s/a/b/c", dir);
    assert_int_equal(fy_mkdir_p(sub, 0700), 0);
    assert_int_equal(fy_mkdir_p(sub, 0700), 0); /* idempotent */
    assert_int_equal(fy_path_join(path, sizeof path, sub, "secret.key"), 0);
    assert_false(fy_file_exists(path));

    /* The mode is exact regardless of the umask. */
    mode_t old = umask(0);
    assert_int_equal(fy_file_write_atomic(path, "first", 5, 0600), 0);
    umask(old);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(fy_file_write_atomic(path, "second!", 7, 0600), 0);
    char *buf = NULL;
    size_t len = 0;
    assert_int_equal(fy_file_read(path, 100, &buf, &len), 0);
    assert_int_equal(len, 7);
    assert_string_equal(buf, "second!");
    free(buf);
    assert_int_equal(fy_file_read(path, 6, &buf, &len), FY_ETOOBIG);
    char missing[300];
    snprintf(missing, sizeof missing, "%s/nope", dir);
    assert_int_equal(fy_file_read(missing, 100, &buf, &len), FY_ENOENT);
    /* No temporary files are left behind. */
    char cmd[512];
    snprintf(cmd, sizeof cmd, "test $(ls -A '%s' | wc -l) -eq 1", sub);
    assert_int_equal(system(cmd), 0);
    char small[8];
    assert_int_equal(fy_path_join(small, sizeof small, "/long/dir", "name"), FY_ETOOBIG);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

static void test_secrets(void **state)
{
    (void)state;
    char a[FY_SECRET_MAX], b[FY_SECRET_MAX];
    assert_int_equal(fy_secret_new("fyt", a, sizeof a), 0);
    assert_int_equal(fy_secret_new("fyt", b, sizeof b), 0);
    assert_string_not_equal(a, b);
    assert_int_equal(strlen(a), 4 + 43);
    assert_int_equal(strncmp(a, "fyt_", 4), 0);
    assert_true(fy_secret_well_formed("fyt", a, strlen(a)));
    assert_false(fy_secret_well_formed("fya", a, strlen(a)));
    assert_false(fy_secret_well_formed("fyt", a, strlen(a) - 1));
    char bad[FY_SECRET_MAX];
    strcpy(bad, a);
    bad[10] = '+';
    assert_false(fy_secret_well_formed("fyt", bad, strlen(bad)));

    uint8_t h[32];
    fy_secret_hash(a, strlen(a), h);
    assert_true(fy_secret_matches(a, strlen(a), h));
    assert_false(fy_secret_matches(b, strlen(b), h));

    static const char *const bad_prefixes[] = {"", "FY", "f_y", "abcdefghijklmnopq", NULL};
    for (int i = 0; bad_prefixes[i]; i++) {
        assert_int_equal(fy_secret_new(bad_prefixes[i], a, sizeof a), FY_EINVAL);
    }
    char tiny[20];
    assert_int_equal(fy_secret_new("fyt", tiny, sizeof tiny), FY_ETOOBIG);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_files),
        cmocka_unit_test(test_secrets),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
