/* Fuzzes what a stranger controls at enrollment: the CSR bytes (PEM or DER)
 * handed to fy_x509_csr_sign, and the token text through base64url and hex
 * decoding. Must never crash, leak or sign a CSR whose signature fails. */
#include "common/crypto.h"
#include "common/err.h"
#include "common/x509.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char *ca_cert, *ca_key;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[256];
    if (!ca_cert) {
        if (fy_x509_ca_create("CN=fuzz CA", 3600, NULL, &ca_cert, &ca_key, err, sizeof err)) {
            abort();
        }
    }
    /* The CSR API takes a NUL-terminated PEM string: give it one. */
    char *csr = malloc(size + 1);
    if (!csr) {
        return 0;
    }
    memcpy(csr, data, size);
    csr[size] = '\0';
    fy_x509_sign_options o = {
        .ca_cert_pem = ca_cert,
        .ca_key_pem = ca_key,
        .csr_pem = csr,
        .subject = "CN=runner-1,O=ferry",
        .not_before = 1700000000,
        .not_after = 1800000000,
    };
    char *cert = NULL;
    if (fy_x509_csr_sign(&o, &cert, err, sizeof err) == 0) {
        /* Whatever was signed must carry our subject, never the CSR's. */
        fy_x509_info info;
        if (fy_x509_info_get(cert, strlen(cert), &info, err, sizeof err) != 0 ||
            strcmp(info.cn, "runner-1") != 0) {
            abort();
        }
        free(cert);
    }
    free(csr);

    uint8_t out[4096];
    size_t n;
    fy_b64url_decode((const char *)data, size, out, sizeof out, &n);
    fy_hex_decode((const char *)data, size, out, sizeof out, &n);
    return 0;
}
