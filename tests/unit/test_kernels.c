/* Backends: the CPU reference is always usable; the CUDA probe, when built,
 * either runs its kernel and matches the CPU, or reports clearly that no
 * device is present (the CI machines have the toolkit but no GPU). Listing
 * the backends never loads the CUDA module; probing does, from the build's
 * lib/ directory. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "common/err.h"
#include "kernels/backend.h"

#include <math.h>
#include <string.h>

static void test_backend_list(void **state)
{
    (void)state;
    fy_backend_info be[4];
    int n = fy_backend_list(be, 4);
    assert_int_equal(n, 2);
    assert_string_equal(be[0].name, "cpu");
    assert_true(be[0].compiled && be[0].usable);
    assert_non_null(strstr(be[0].detail, "cores"));
    assert_string_equal(be[1].name, "cuda");
#ifdef FY_HAVE_CUDA
    /* Listed, not probed: probing would load the CUDA libraries. */
    assert_true(be[1].compiled);
    assert_false(be[1].usable);
    assert_non_null(strstr(be[1].detail, "not probed"));
    assert_non_null(strstr(be[1].detail, "libferry_cuda.so"));
    assert_null(strstr(be[1].detail, "missing"));
    /* Probing loads the module built beside this test and asks the runtime. */
    char err[512] = "";
    assert_int_equal(fy_cuda_module_load(err, sizeof err), 0);
    fy_backend_info info;
    int rc = fy_cuda_probe(&info);
    assert_string_equal(info.name, "cuda");
    assert_true(info.compiled);
    assert_int_equal(info.usable, rc == 0);
    assert_true(rc == 0 || rc == FY_ENOTSUP);
    assert_non_null(strstr(info.detail, "runtime"));
    print_message("cuda: %s\n", info.detail);
#else
    assert_false(be[1].compiled);
#endif
    assert_int_equal(fy_backend_list(be, 1), 1);
}

static void test_axpy(void **state)
{
    (void)state;
    enum { N = 1000 };
    float x[N], y[N], ref[N];
    for (int i = 0; i < N; i++) {
        x[i] = (float)i * 0.5f;
        y[i] = ref[i] = (float)(N - i);
    }
    fy_cpu_axpy(N, 2.0f, x, ref);
    for (int i = 0; i < N; i++) {
        assert_float_equal(ref[i], (float)(N - i) + (float)i, 0.0);
    }
#ifdef FY_HAVE_CUDA
    fy_backend_info info;
    char msg[256];
    int rc = fy_cuda_axpy(N, 2.0f, x, y, msg, sizeof msg);
    if (fy_cuda_probe(&info) == 0) {
        assert_int_equal(rc, 0);
        for (int i = 0; i < N; i++) {
            assert_float_equal(y[i], ref[i], 1e-5 * fabsf(ref[i]));
        }
    } else {
        /* No device: a clear error, and y untouched. */
        assert_int_equal(rc, FY_ENOTSUP);
        assert_true(strlen(msg) > 0);
        assert_float_equal(y[1], (float)(N - 1), 0.0);
        print_message("cuda: %s\n", msg);
    }
#else
    fy_cpu_axpy(N, 2.0f, x, y);
    assert_memory_equal(y, ref, sizeof y);
#endif
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_backend_list),
        cmocka_unit_test(test_axpy),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
