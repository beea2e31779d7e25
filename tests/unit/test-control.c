/* The control socket: JSON lines, commands, errors, stale sockets, mode. */
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "control.h"
#include "resync/macro.h"
#include "resync/unixsock.h"

static char dir[64];
static char path[128];

static int cmd_echo(void *userdata, struct control_client *c, struct json_object *req)
{
	struct json_object *o = json_object_new_object();

	(void)userdata;
	json_object_object_add(o, "echo", json_object_get(req));
	return control_client_result(c, o);
}

static int cmd_stream(void *userdata, struct control_client *c, struct json_object *req)
{
	int *calls = userdata;

	(void)req;
	(*calls)++;
	for (int i = 0; i < 3; i++) {
		struct json_object *o = json_object_new_object();

		json_object_object_add(o, "type", json_object_new_string("progress"));
		json_object_object_add(o, "i", json_object_new_int(i));
		assert_int_equal(control_client_send(c, o), 0);
		json_object_put(o);
	}
	return control_client_result(c, NULL);
}

static int cmd_fail(void *userdata, struct control_client *c, struct json_object *req)
{
	(void)userdata;
	(void)c;
	(void)req;
	return -EPERM;
}

static int cmd_count(void *userdata, struct control_client *c, struct json_object *req)
{
	int *calls = userdata;

	(void)req;
	(*calls)++;
	return control_client_result(c, NULL);
}

static const struct control_field echo_fields[] = {
	{"x", CONTROL_FIELD_UINT64, 0},
	{NULL, 0, 0},
};

/* What node.c gives verify and resync, and a required field. */
static const struct control_field wipe_fields[] = {
	{"nodes", CONTROL_FIELD_STRINGS, 0},
	{"plan", CONTROL_FIELD_BOOL, 0},
	{"dry_run", CONTROL_FIELD_BOOL, CONTROL_FIELD_DRY_RUN},
	{"max_rate", CONTROL_FIELD_UINT64, 0},
	{"label", CONTROL_FIELD_STRING, 0},
	{NULL, 0, 0},
};
static const struct control_field need_fields[] = {
	{"rate", CONTROL_FIELD_UINT64, CONTROL_FIELD_REQUIRED},
	{NULL, 0, 0},
};

static const struct control_command cmds[] = {
	{"echo", cmd_echo, echo_fields, 0},
	{"stream", cmd_stream, NULL, 0},
	{"fail", cmd_fail, NULL, 0},
	{"wipe", cmd_count, wipe_fields, CONTROL_CMD_ERASES},
	{"look", cmd_count, wipe_fields, 0},
	{"need", cmd_count, need_fields, 0},
};
#define NCMDS ARRAY_SIZE(cmds)
#define CLUSTER "demo"

static int setup(void **state)
{
	(void)state;
	strcpy(dir, "/tmp/resync-control.XXXXXX");
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/ctl.sock", dir);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	unlink(path);
	rmdir(dir);
	return 0;
}

static struct json_object *roundtrip(int fd, const char *line)
{
	struct json_object *o = NULL;

	assert_int_equal(write(fd, line, strlen(line)), (ssize_t)strlen(line));
	assert_int_equal(control_recv(fd, 5000, &o), 0);
	return o;
}

static const char *str(struct json_object *o, const char *key)
{
	struct json_object *v;

	if (!json_object_object_get_ex(o, key, &v))
		return NULL;
	return json_object_get_string(v);
}

static void test_commands(void **state)
{
	struct control_server *s;
	struct json_object *o;
	struct stat st;
	int calls = 0, fd;

	(void)state;
	/* 0600 whatever the umask, and the umask is left as it was (other
	 * threads of the daemon create files meanwhile). */
	umask(0);
	assert_int_equal(control_server_new(path, CLUSTER, cmds, NCMDS, &calls, &s), 0);
	assert_int_equal(umask(022), 0);
	assert_int_equal(stat(path, &st), 0);
	assert_true(S_ISSOCK(st.st_mode));
	assert_int_equal(st.st_mode & 0777, 0600);

	assert_int_equal(control_connect(path, &fd), 0);
	o = roundtrip(fd, "{\"cmd\":\"echo\",\"x\":42}\n");
	assert_string_equal(str(o, "type"), "result");
	assert_string_equal(str(o, "ok"), "true");
	json_object_put(o);

	o = roundtrip(fd, "{\"cmd\":\"nope\"}\n");
	assert_string_equal(str(o, "ok"), "false");
	assert_non_null(strstr(str(o, "error"), "unknown command 'nope'"));
	json_object_put(o);

	o = roundtrip(fd, "not json\n");
	assert_string_equal(str(o, "ok"), "false");
	json_object_put(o);

	o = roundtrip(fd, "[1,2]\n");
	assert_string_equal(str(o, "ok"), "false");
	json_object_put(o);

	o = roundtrip(fd, "{\"cmd\":\"fail\"}\n");
	assert_string_equal(str(o, "ok"), "false");
	assert_non_null(strstr(str(o, "error"), "fail: Operation not permitted"));
	json_object_put(o);

	/* A streaming command: three progress lines, then the result. */
	o = roundtrip(fd, "{\"cmd\":\"stream\"}\n");
	for (int i = 0; i < 3; i++) {
		assert_string_equal(str(o, "type"), "progress");
		json_object_put(o);
		assert_int_equal(control_recv(fd, 5000, &o), 0);
	}
	assert_string_equal(str(o, "type"), "result");
	json_object_put(o);
	assert_int_equal(calls, 1);

	/* A second server on a live socket is refused, and the first one
	 * still answers on it, on the open connection and a new one. */
	{
		struct control_server *s2;
		int fd2;

		assert_int_equal(control_server_new(path, CLUSTER, cmds, NCMDS, NULL, &s2), -EADDRINUSE);
		o = roundtrip(fd, "{\"cmd\":\"echo\"}\n");
		assert_string_equal(str(o, "ok"), "true");
		json_object_put(o);
		assert_int_equal(control_connect(path, &fd2), 0);
		o = roundtrip(fd2, "{\"cmd\":\"echo\"}\n");
		assert_string_equal(str(o, "ok"), "true");
		json_object_put(o);
		close(fd2);
	}
	close(fd);
	control_server_free(s);
	assert_int_equal(stat(path, &st), -1);
}

static void test_stale_socket_replaced(void **state)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	struct control_server *s;
	struct json_object *o;
	int fd, calls = 0;

	(void)state;
	/* A socket file whose owner is gone: bound, then closed. */
	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	strcpy(sa.sun_path, path);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	close(fd);

	assert_int_equal(control_server_new(path, CLUSTER, cmds, NCMDS, &calls, &s), 0);
	assert_int_equal(control_connect(path, &fd), 0);
	o = roundtrip(fd, "{\"cmd\":\"echo\"}\n");
	assert_string_equal(str(o, "ok"), "true");
	json_object_put(o);
	close(fd);
	control_server_free(s);
}

static void test_oversized_line(void **state)
{
	struct control_server *s;
	struct json_object *o = NULL;
	size_t big = (1 << 20) + 10;
	char *junk = malloc(big);
	int fd, calls = 0;
	size_t off = 0;

	(void)state;
	memset(junk, 'a', big);
	assert_int_equal(control_server_new(path, CLUSTER, cmds, NCMDS, &calls, &s), 0);
	assert_int_equal(control_connect(path, &fd), 0);
	while (off < big) {
		ssize_t n = send(fd, junk + off, big - off, MSG_NOSIGNAL);

		if (n <= 0)
			break; /* the server may hang up once it has refused */
		off += (size_t)n;
	}
	assert_int_equal(control_recv(fd, 5000, &o), 0);
	assert_string_equal(str(o, "ok"), "false");
	assert_non_null(strstr(str(o, "error"), "longer than"));
	json_object_put(o);
	close(fd);
	free(junk);
	control_server_free(s);
}

static void test_recv_timeout_and_eof(void **state)
{
	int sv[2];
	struct json_object *o;

	(void)state;
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	assert_int_equal(control_recv(sv[0], 50, &o), -ETIMEDOUT);
	close(sv[1]);
	assert_int_equal(control_recv(sv[0], 1000, &o), -ECONNRESET);
	close(sv[0]);
}

/* A reply longer than one peek, and two lines in one write: each call takes
 * exactly one line and leaves the next one in the socket. */
static void test_recv_long_and_back_to_back(void **state)
{
	enum { BIG = 300000 };
	static char line[BIG + 64];
	size_t big = BIG, k = 0;
	struct json_object *o;
	int sv[2];

	(void)state;
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	k += (size_t)sprintf(line, "{\"type\":\"result\",\"pad\":\"");
	memset(line + k, 'x', big);
	k += big;
	k += (size_t)sprintf(line + k, "\"}\n{\"n\":2}\n");
	/* Written from a thread-free sender in pieces the reader must join. */
	if (fork() == 0) {
		for (size_t off = 0; off < k;) {
			ssize_t n = write(sv[1], line + off, MIN(k - off, (size_t)70000));

			if (n <= 0)
				_exit(1);
			off += (size_t)n;
		}
		_exit(0);
	}
	close(sv[1]);
	assert_int_equal(control_recv(sv[0], 5000, &o), 0);
	assert_int_equal(strlen(str(o, "pad")), big);
	json_object_put(o);
	assert_int_equal(control_recv(sv[0], 5000, &o), 0);
	assert_string_equal(str(o, "n"), "2");
	json_object_put(o);
	assert_int_equal(control_recv(sv[0], 5000, &o), -ECONNRESET);
	close(sv[0]);
	wait(NULL);
}

/* Send line; expect a refusal whose error holds every one of want (NULL
 * ended) and no call of a handler. */
static void refused(int fd, const int *calls, const char *line, ...)
{
	int before = *calls;
	struct json_object *o = roundtrip(fd, line);
	const char *w;
	va_list ap;

	assert_string_equal(str(o, "type"), "result");
	assert_string_equal(str(o, "ok"), "false");
	va_start(ap, line);
	while ((w = va_arg(ap, const char *))) {
		if (!strstr(str(o, "error"), w))
			fail_msg("'%s' refused with '%s', which lacks '%s'", line, str(o, "error"), w);
	}
	va_end(ap);
	json_object_put(o);
	assert_int_equal(*calls, before);
}

static void accepted(int fd, int *calls, const char *line)
{
	int before = *calls;
	struct json_object *o = roundtrip(fd, line);

	if (strcmp(str(o, "ok"), "true"))
		fail_msg("'%s' was refused: %s", line, str(o, "error"));
	json_object_put(o);
	assert_int_equal(*calls, before + 1);
}

static void test_checked_requests(void **state)
{
	struct control_server *s;
	int calls = 0, fd;

	(void)state;
	assert_int_equal(control_server_new(path, CLUSTER, cmds, NCMDS, &calls, &s), 0);
	assert_int_equal(control_connect(path, &fd), 0);

	refused(fd, &calls, "[\"wipe\"]\n", "not a JSON object", NULL);
	refused(fd, &calls, "{\"nodes\":[]}\n", "\"cmd\"", "string", NULL);
	refused(fd, &calls, "{\"cmd\":7}\n", "\"cmd\"", "string", NULL);
	refused(fd, &calls, "{\"cmd\":\"nope\"}\n", "unknown command 'nope'", NULL);
	refused(fd, &calls, "{\"cmd\":\"look\",\"nodez\":[]}\n", "unknown field \"nodez\"", NULL);
	refused(fd, &calls, "{\"cmd\":\"look\",\"nodes\":\"node2\"}\n", "\"nodes\"",
		"an array of strings", NULL);
	refused(fd, &calls, "{\"cmd\":\"look\",\"nodes\":[\"a\",2]}\n", "\"nodes\"",
		"an array of strings", NULL);
	refused(fd, &calls, "{\"cmd\":\"look\",\"max_rate\":\"abc\"}\n", "\"max_rate\"",
		"a non-negative integer", NULL);
	refused(fd, &calls, "{\"cmd\":\"look\",\"max_rate\":-1}\n", "\"max_rate\"",
		"a non-negative integer", NULL);
	refused(fd, &calls, "{\"cmd\":\"look\",\"max_rate\":1.5}\n", "\"max_rate\"",
		"a non-negative integer", NULL);
	refused(fd, &calls, "{\"cmd\":\"look\",\"dry_run\":\"no\"}\n", "\"dry_run\"",
		"true or false", NULL);
	refused(fd, &calls, "{\"cmd\":\"look\",\"plan\":null}\n", "\"plan\"", "true or false", NULL);
	refused(fd, &calls, "{\"cmd\":\"look\",\"label\":3}\n", "\"label\"", "a string", NULL);
	refused(fd, &calls, "{\"cmd\":\"need\"}\n", "missing field \"rate\"", NULL);
	refused(fd, &calls, "{\"cmd\":\"need\",\"rate\":-5}\n", "\"rate\"", NULL);
	/* confirm is a field of an erasing command only. */
	refused(fd, &calls, "{\"cmd\":\"look\",\"confirm\":\"demo\"}\n", "unknown field \"confirm\"", NULL);
	/* An erasing request without the cluster's name, or with another. */
	refused(fd, &calls, "{\"cmd\":\"wipe\"}\n", "erases data", "\"confirm\": \"demo\"", NULL);
	refused(fd, &calls, "{\"cmd\":\"wipe\",\"nodes\":[\"n2\"],\"confirm\":\"other\"}\n",
		"erases data", "\"confirm\": \"demo\"", NULL);
	refused(fd, &calls, "{\"cmd\":\"wipe\",\"confirm\":\"\"}\n", "erases data", NULL);
	refused(fd, &calls, "{\"cmd\":\"wipe\",\"confirm\":true}\n", "\"confirm\"", "a string", NULL);
	refused(fd, &calls, "{\"cmd\":\"wipe\",\"dry_run\":false}\n", "erases data", NULL);
	/* plan is not a dry-run field: it does not stand in for confirm. */
	refused(fd, &calls, "{\"cmd\":\"wipe\",\"plan\":true}\n", "erases data", NULL);
	/* A string with a NUL byte is not the C string before it (found by
	 * fuzz-control: "status\u0000x" ran status, "demo\u0000x" confirmed). */
	refused(fd, &calls, "{\"cmd\":\"look\\u0000x\"}\n", "\"cmd\"", "string", NULL);
	refused(fd, &calls, "{\"cmd\":\"wipe\",\"confirm\":\"demo\\u0000x\"}\n", "\"confirm\"",
		"a string", NULL);
	refused(fd, &calls, "{\"cmd\":\"look\",\"nodes\":[\"n2\\u0000\"]}\n", "\"nodes\"", NULL);

	accepted(fd, &calls, "{\"cmd\":\"look\"}\n");
	accepted(fd, &calls,
		 "{\"cmd\":\"look\",\"nodes\":[\"n2\",\"n3\"],\"plan\":true,\"dry_run\":false,"
		 "\"max_rate\":18446744073709551615,\"label\":\"x\"}\n");
	accepted(fd, &calls, "{\"cmd\":\"look\",\"nodes\":[],\"max_rate\":0}\n");
	accepted(fd, &calls, "{\"cmd\":\"wipe\",\"confirm\":\"demo\"}\n");
	accepted(fd, &calls,
		 "{\"cmd\":\"wipe\",\"nodes\":[\"n2\"],\"max_rate\":1048576,\"confirm\":\"demo\"}\n");
	accepted(fd, &calls, "{\"cmd\":\"wipe\",\"dry_run\":true}\n");
	accepted(fd, &calls, "{\"cmd\":\"need\",\"rate\":0}\n");
	close(fd);
	control_server_free(s);
}

/* A path that is not a socket is neither taken nor removed. */
static void test_not_a_socket_left_alone(void **state)
{
	struct control_server *s;
	struct stat st;
	int fd;

	(void)state;
	fd = open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(control_server_new(path, CLUSTER, cmds, NCMDS, NULL, &s), -EEXIST);
	assert_int_equal(stat(path, &st), 0);
	assert_true(S_ISREG(st.st_mode));
}

static void test_accept_backoff(void **state)
{
	unsigned b = 0;

	(void)state;
	assert_int_equal(unixsock_accept_delay(ECONNABORTED, &b), 0);
	assert_int_equal(unixsock_accept_delay(EINTR, &b), 0);
	assert_int_equal(unixsock_accept_delay(EMFILE, &b), 100);
	assert_int_equal(unixsock_accept_delay(ENFILE, &b), 200);
	assert_int_equal(unixsock_accept_delay(ENOBUFS, &b), 400);
	assert_int_equal(unixsock_accept_delay(ENOMEM, &b), 800);
	assert_int_equal(unixsock_accept_delay(EMFILE, &b), 1000);
	assert_int_equal(unixsock_accept_delay(EMFILE, &b), 1000);
	b = 0; /* an accept succeeded */
	assert_int_equal(unixsock_accept_delay(EMFILE, &b), 100);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_commands, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stale_socket_replaced, setup, teardown),
		cmocka_unit_test_setup_teardown(test_checked_requests, setup, teardown),
		cmocka_unit_test_setup_teardown(test_not_a_socket_left_alone, setup, teardown),
		cmocka_unit_test(test_accept_backoff),
		cmocka_unit_test_setup_teardown(test_oversized_line, setup, teardown),
		cmocka_unit_test_setup_teardown(test_recv_timeout_and_eof, setup, teardown),
		cmocka_unit_test(test_recv_long_and_back_to_back),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
