/* redis_server_seed.h (sh-seed's redis_server.h, kept apart on the merge into sh-hooks): a real redis-server for unit tests, on a unix socket in a
 * temporary directory (header-only; cmocka asserts on failure).
 *
 *   find_redis() once in main (redis_bin stays "" when none is installed:
 *   skip); fill a srv's dir, sock and conf (a config file with requirepass,
 *   used when it exists); srv_start(&s) waits until the server accepts
 *   connections (bounded by DEADLINE_MS); srv_stop(&s, SIGKILL).
 * The server dies with the test process (PR_SET_PDEATHSIG), and
 * srv_cleanup_atexit stops live_srv should a test fail mid-way. */
#ifndef FY_TEST_REDIS_SERVER_H
#define FY_TEST_REDIS_SERVER_H

#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef DEADLINE_MS
#define DEADLINE_MS 30000
#endif

static char redis_bin[700];

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- the server -------------------------------------------------------- */

typedef struct {
    char dir[48];
    char sock[64];
    char conf[128];
    pid_t pid;
} srv;

static srv *live_srv; /* the teardown's, for the atexit net */

static int can_connect(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int fd = socket(AF_UNIX, SOCK_STREAM, 0), ok;
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    ok = fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
    if (fd >= 0)
        close(fd);
    return ok;
}

static void srv_stop(srv *s, int sig)
{
    if (s->pid > 0) {
        kill(s->pid, sig);
        waitpid(s->pid, NULL, 0);
        s->pid = 0;
    }
}

/* Starts redis-server on S->sock (a password from S->conf when that file
 * exists) and waits until it accepts connections. */
static void srv_start(srv *s)
{
    char logp[160];
    struct stat st;
    pid_t pid;

    snprintf(logp, sizeof logp, "%s/log", s->dir);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        const char *argv[20];
        int i = 0, fd = open(logp, O_WRONLY | O_CREAT | O_APPEND, 0600);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        argv[i++] = redis_bin;
        if (stat(s->conf, &st) == 0)
            argv[i++] = s->conf; /* requirepass lives here, not on the command line */
        argv[i++] = "--port";
        argv[i++] = "0";
        argv[i++] = "--unixsocket";
        argv[i++] = s->sock;
        argv[i++] = "--unixsocketperm";
        argv[i++] = "700";
        argv[i++] = "--save";
        argv[i++] = "";
        argv[i++] = "--appendonly";
        argv[i++] = "no";
        argv[i++] = "--daemonize";
        argv[i++] = "no";
        argv[i++] = "--dir";
        argv[i++] = s->dir;
        argv[i] = NULL;
        execv(redis_bin, (char *const *)argv);
        _exit(127);
    }
    s->pid = pid;
    for (uint64_t dl = now_ms() + DEADLINE_MS; !can_connect(s->sock);) {
        int wst;
        if (waitpid(pid, &wst, WNOHANG) == pid) {
            s->pid = 0;
            fail_msg("redis-server exited at start (see %s)", logp);
        }
        assert_true(now_ms() < dl);
        struct timespec ts = {0, 5 * 1000000};
        nanosleep(&ts, NULL); /* polling interval only; the deadline is the bound */
    }
}

static void srv_cleanup_atexit(void)
{
    if (live_srv)
        srv_stop(live_srv, SIGKILL);
}

static void find_redis(void)
{
    const char *path = getenv("PATH");
    char buf[4096];

    if (access("/usr/bin/redis-server", X_OK) == 0) {
        snprintf(redis_bin, sizeof redis_bin, "/usr/bin/redis-server");
        return;
    }
    snprintf(buf, sizeof buf, "%s", path ? path : "");
    for (char *save = NULL, *d = strtok_r(buf, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
        char cand[600];
        snprintf(cand, sizeof cand, "%s/redis-server", d);
        if (access(cand, X_OK) == 0) {
            snprintf(redis_bin, sizeof redis_bin, "%s", cand);
            return;
        }
    }
}

#endif
