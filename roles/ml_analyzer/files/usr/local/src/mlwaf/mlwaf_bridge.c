/*
 * mlwaf_bridge: the native half of the ModSecurity bridge (Lua 5.1 C module).
 *
 * ModSecurity 2.9 runs every SecRuleScript in a fresh Lua state, so the Lua
 * bridge pays on every request for whatever it loads. This module keeps that
 * small: two functions, no metatables, no buffering layer.
 *
 *   quote(text)                      text as a JSON string, quotes included:
 *                                    '"', '\' and control bytes escaped,
 *                                    other bytes (UTF-8 included) as they are
 *   exchange(path, message, ms)      connects to the Unix socket at path,
 *                                    sends message, reads one line back; all
 *                                    within one deadline of ms milliseconds.
 *                                    Returns the line (without its newline),
 *                                    or nil and why.
 *
 * Loaded with package.loadlib(path, "luaopen_mlwaf_bridge"); Apache keeps the
 * library mapped (LoadFile), so loading it costs a reference count.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>

#define REPLY_MAX 65536

static int quote(lua_State *L)
{
    size_t length, i;
    const char *text = luaL_checklstring(L, 1, &length);
    static const char hex[] = "0123456789abcdef";
    luaL_Buffer out;

    luaL_buffinit(L, &out);
    luaL_addchar(&out, '"');
    for (i = 0; i < length; i++) {
        unsigned char c = (unsigned char)text[i];
        if (c == '"' || c == '\\') {
            luaL_addchar(&out, '\\');
            luaL_addchar(&out, c);
        } else if (c < 0x20 || c == 0x7f) {
            luaL_addstring(&out, "\\u00");
            luaL_addchar(&out, hex[c >> 4]);
            luaL_addchar(&out, hex[c & 15]);
        } else {
            luaL_addchar(&out, c);
        }
    }
    luaL_addchar(&out, '"');
    luaL_pushresult(&out);
    return 1;
}

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

/* Waits for fd to be ready for events until the deadline: 1 ready, 0 timed out, -1 error. */
static int wait_for(int fd, short events, long deadline)
{
    for (;;) {
        long left = deadline - now_ms();
        struct pollfd p = { fd, events, 0 };
        int ready;
        if (left <= 0)
            return 0;
        ready = poll(&p, 1, (int)left);
        if (ready > 0)
            return 1;
        if (ready == 0)
            return 0;
        if (errno != EINTR)
            return -1;
    }
}

/* Bounds a blocking connect by the deadline: a Unix socket whose backlog is full
 * makes connect() wait for room, up to the send timeout. */
static void send_timeout(int fd, long deadline)
{
    long left = deadline - now_ms();
    struct timeval tv;
    if (left < 1)
        left = 1;
    tv.tv_sec = left / 1000;
    tv.tv_usec = (left % 1000) * 1000;
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

static int failed(lua_State *L, int fd, const char *what, const char *why)
{
    if (fd >= 0)
        close(fd);
    lua_pushnil(L);
    lua_pushfstring(L, "%s: %s", what, why);
    return 2;
}

static int exchange(lua_State *L)
{
    size_t path_length, length, sent = 0, got = 0;
    const char *path = luaL_checklstring(L, 1, &path_length);
    const char *message = luaL_checklstring(L, 2, &length);
    long deadline = now_ms() + (long)luaL_optnumber(L, 3, 50);
    struct sockaddr_un address;
    char reply[REPLY_MAX];
    int fd, ready;

    if (path_length >= sizeof(address.sun_path))
        return failed(L, -1, "connect", "socket path too long");
    memset(&address, 0, sizeof(address));
    address.sun_family = AF_UNIX;
    memcpy(address.sun_path, path, path_length);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return failed(L, -1, "socket", strerror(errno));
    send_timeout(fd, deadline);
    while (connect(fd, (struct sockaddr *)&address, sizeof(address)) != 0) {
        if (errno == EISCONN)
            break; /* an interrupted connect that went through */
        if (errno == EINTR && now_ms() < deadline)
            continue;
        if (errno == EAGAIN || errno == EINPROGRESS || errno == EINTR)
            return failed(L, fd, "connect", "timeout");
        return failed(L, fd, "connect", strerror(errno));
    }
    if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) != 0)
        return failed(L, fd, "socket", strerror(errno));
    while (sent < length) {
        ssize_t n = send(fd, message + sent, length - sent, MSG_NOSIGNAL);
        if (n > 0) {
            sent += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno != EAGAIN)
            return failed(L, fd, "send", strerror(errno));
        ready = wait_for(fd, POLLOUT, deadline);
        if (ready <= 0)
            return failed(L, fd, "send", ready == 0 ? "timeout" : strerror(errno));
    }
    for (;;) {
        ssize_t n;
        char *end;
        ready = wait_for(fd, POLLIN, deadline);
        if (ready <= 0)
            return failed(L, fd, "receive", ready == 0 ? "timeout" : strerror(errno));
        n = recv(fd, reply + got, sizeof(reply) - got, 0);
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (n < 0)
            return failed(L, fd, "receive", strerror(errno));
        if (n == 0)
            return failed(L, fd, "receive", "closed");
        end = memchr(reply + got, '\n', (size_t)n);
        got += (size_t)n;
        if (end != NULL) {
            close(fd);
            lua_pushlstring(L, reply, (size_t)(end - reply));
            return 1;
        }
        if (got == sizeof(reply))
            return failed(L, fd, "receive", "reply too long");
    }
}

static const luaL_Reg functions[] = {
    { "quote", quote },
    { "exchange", exchange },
    { NULL, NULL },
};

int luaopen_mlwaf_bridge(lua_State *L)
{
    lua_newtable(L);
    luaL_register(L, NULL, functions);
    return 1;
}
