/* bench_aesgcm: one AES-128-GCM pass of mbedTLS, the library the tunnel
 * encrypts with, over full 16 KiB TLS records (the record size a bulk
 * transfer uses), the way TLS 1.2 does it: a fresh 12-byte nonce, 13 bytes
 * of additional data and a 16-byte tag per record. Prints bytes per second
 * of the best of five passes over TOTAL bytes (default 256 MiB):
 *
 *   bench_aesgcm [TOTAL_BYTES]  ->  "aes128gcm_bytes_per_s 231456789"
 *
 * bench_tunnel.sh derives the bound on a download through the tunnel from
 * it: the gateway decrypts every byte from the tunnel and encrypts it
 * again for the client, so it moves at most half a single pass. */
#include "tests/bench/bench_util.h"

#include <mbedtls/gcm.h>

#define REC (16 * 1024)

int main(int argc, char **argv)
{
    size_t total = argc > 1 ? strtoull(argv[1], NULL, 10) : (size_t)256 << 20;
    if (total < REC) {
        fprintf(stderr, "bench_aesgcm: TOTAL_BYTES must be at least %d\n", REC);
        return 2;
    }
    static unsigned char in[REC], out[REC];
    unsigned char key[16], iv[12] = {0}, aad[13] = {0}, tag[16];
    for (size_t i = 0; i < sizeof in; i++) {
        in[i] = (unsigned char)(i * 31u);
    }
    memset(key, 7, sizeof key);
    mbedtls_gcm_context g;
    mbedtls_gcm_init(&g);
    if (mbedtls_gcm_setkey(&g, MBEDTLS_CIPHER_ID_AES, key, 128) != 0) {
        fprintf(stderr, "bench_aesgcm: setkey failed\n");
        return 1;
    }
    double best = 0;
    unsigned sum = 0;
    for (int run = 0; run < 5; run++) {
        double t0 = bench_now_s();
        for (size_t done = 0; done < total; done += REC) {
            memcpy(iv + 4, &done, sizeof done < 8 ? sizeof done : 8); /* explicit nonce */
            memcpy(aad, &done, 8);
            if (mbedtls_gcm_crypt_and_tag(&g, MBEDTLS_GCM_ENCRYPT, REC, iv, sizeof iv, aad,
                                          sizeof aad, in, out, sizeof tag, tag) != 0) {
                fprintf(stderr, "bench_aesgcm: encrypt failed\n");
                return 1;
            }
            sum += tag[0];
        }
        double rate = (double)total / (bench_now_s() - t0);
        best = rate > best ? rate : best;
    }
    mbedtls_gcm_free(&g);
    printf("aes128gcm_bytes_per_s %.0f\n", best);
    return sum == 0xffffffffu; /* keeps the loop from being optimised away */
}
