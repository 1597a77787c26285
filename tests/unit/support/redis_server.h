/* redis_server.h: a real redis-server for the unit tests that need one,
 * started by the test itself on a unix socket in a fresh temporary
 * directory (no TCP port), and killed by the teardown or, should the test
 * process die, through PR_SET_PDEATHSIG (and an atexit net for a failed
 * assertion that skipped the teardown). Nothing waits for a fixed time:
 * start-up polls the socket under a generous deadline, and
 * REDIS_WAIT_UNTIL runs a libuv loop until a condition holds.
 * Header-only; include after <cmocka.h>. */
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
#include <uv.h>

#define REDIS_SRV_DEADLINE_MS 30000

typedef struct {
    char dir[48];   /* the temporary directory, removed by redis_srv_cleanup */
    char sock[64];  /* DIR/r.sock */
    char conf[128]; /* DIR/redis.conf: passed to the server when it exists */
    pid_t pid;
} redis_srv;

static redis_srv *redis_srv_live; /* the atexit net's */
static char redis_srv_bin[700];   /* redis-server's path, once found */

static inline uint64_t redis_srv_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Runs LOOP until COND holds, failing the test after the deadline. LOOP
 * needs a repeating timer (or other traffic) so UV_RUN_ONCE returns. */
#define REDIS_WAIT_UNTIL(loop, cond)                               \
    do {                                                           \
        uint64_t dl_ = redis_srv_now_ms() + REDIS_SRV_DEADLINE_MS; \
        while (!(cond)) {                                          \
            if (redis_srv_now_ms() > dl_)                          \
                fail_msg("timed out waiting for: %s", #cond);      \
            uv_run((loop), UV_RUN_ONCE);                           \
        }                                                          \
    } while (0)

static inline int redis_srv_can_connect(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int fd = socket(AF_UNIX, SOCK_STREAM, 0), ok;
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    ok = fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
    if (fd >= 0)
        close(fd);
    return ok;
}

/* redis-server's path into BIN: /usr/bin first, then $PATH. 0 when not
 * installed. */
static inline int redis_srv_find(char *bin, size_t len)
{
    const char *path = getenv("PATH");
    char buf[4096];

    if (access("/usr/bin/redis-server", X_OK) == 0) {
        snprintf(bin, len, "/usr/bin/redis-server");
        return 1;
    }
    snprintf(buf, sizeof buf, "%s", path ? path : "");
    for (char *save = NULL, *d = strtok_r(buf, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
        char cand[600];
        snprintf(cand, sizeof cand, "%s/redis-server", d);
        if (access(cand, X_OK) == 0) {
            snprintf(bin, len, "%s", cand);
            return 1;
        }
    }
    return 0;
}

static inline void redis_srv_stop(redis_srv *s, int sig)
{
    if (s->pid > 0) {
        kill(s->pid, sig);
        waitpid(s->pid, NULL, 0);
        s->pid = 0;
    }
}

static inline void redis_srv_atexit(void)
{
    if (redis_srv_live)
        redis_srv_stop(redis_srv_live, SIGKILL);
}

/* Skips the test, saying why, when redis-server is not installed: call it
 * in a setup before allocating anything. */
static inline void redis_srv_need(void)
{
    if (!redis_srv_bin[0] && !redis_srv_find(redis_srv_bin, sizeof redis_srv_bin)) {
        print_message("redis-server not found on PATH (Debian package redis-server, "
                      "deploy/install-deps.sh): skipping\n");
        skip();
    }
}

/* Prepares S (a fresh directory and the paths in it; no server yet), after
 * redis_srv_need. */
static inline void redis_srv_init(redis_srv *s)
{
    static int net;

    redis_srv_need();
    memset(s, 0, sizeof *s);
    snprintf(s->dir, sizeof s->dir, "/tmp/fy-redis-XXXXXX");
    assert_non_null(mkdtemp(s->dir));
    snprintf(s->sock, sizeof s->sock, "%s/r.sock", s->dir);
    snprintf(s->conf, sizeof s->conf, "%s/redis.conf", s->dir);
    if (!net) {
        signal(SIGPIPE, SIG_IGN);
        atexit(redis_srv_atexit);
        net = 1;
    }
    redis_srv_live = s;
}

/* Kills S's server and removes its directory. */
static inline void redis_srv_cleanup(redis_srv *s)
{
    char cmd[128];

    redis_srv_stop(s, SIGKILL);
    redis_srv_live = NULL;
    if (!s->dir[0])
        return;
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", s->dir);
    if (system(cmd) != 0)
        print_message("could not remove %s\n", s->dir);
}

/* Starts redis-server on S->sock (with S->conf when that file exists: a
 * password lives there, never on the command line) and waits until it
 * accepts connections. */
static inline void redis_srv_start(redis_srv *s)
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
        argv[i++] = redis_srv_bin;
        if (stat(s->conf, &st) == 0)
            argv[i++] = s->conf;
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
        execv(redis_srv_bin, (char *const *)argv);
        _exit(127);
    }
    s->pid = pid;
    for (uint64_t dl = redis_srv_now_ms() + REDIS_SRV_DEADLINE_MS;
         !redis_srv_can_connect(s->sock);) {
        int wst;
        if (waitpid(pid, &wst, WNOHANG) == pid) {
            s->pid = 0;
            fail_msg("redis-server exited at start (see %s)", logp);
        }
        assert_true(redis_srv_now_ms() < dl);
        struct timespec ts = {0, 5 * 1000000};
        nanosleep(&ts, NULL); /* polling interval only; the deadline is the bound */
    }
}

/* A loop for the clients and a server to talk to (not started). */
typedef struct {
    uv_loop_t loop;
    uv_timer_t tick; /* wakes UV_RUN_ONCE regularly so deadlines are checked */
    redis_srv s;
} redis_env;

static inline void redis_env_on_tick(uv_timer_t *t)
{
    (void)t;
}

/* Prepares E (skipping the test without redis-server). */
static inline void redis_env_init(redis_env *e)
{
    redis_srv_init(&e->s);
    assert_int_equal(uv_loop_init(&e->loop), 0);
    uv_timer_init(&e->loop, &e->tick);
    uv_timer_start(&e->tick, redis_env_on_tick, 10, 10);
}

/* Closes E's loop (free its clients first) and kills its server. */
static inline void redis_env_close(redis_env *e)
{
    uv_close((uv_handle_t *)&e->tick, NULL);
    uv_run(&e->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&e->loop), 0);
    redis_srv_cleanup(&e->s);
}

#endif
