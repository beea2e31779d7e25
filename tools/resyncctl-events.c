/* resyncctl events | pause | resume | rate: the event stream of the local
 * daemon and the running resync's pace. */
#include <errno.h>
#include <getopt.h>
#include <json-c/json.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "resync/clock.h"
#include "resync/config.h"
#include "resync/control.h"
#include "resync/macro.h"
#include "resync/parse.h"
#include "resyncctl.h"

#define EXIT_USAGE RESYNCCTL_EXIT_USAGE

static const char events_usage[] =
	"usage: resyncctl events [--config FILE] [--node NAME] [--json]\n"
	"Print the daemon's events as they happen, one line each, until\n"
	"interrupted: resync_started, progress (at most once a second per node),\n"
	"state_changed, resync_finished|resync_failed|resync_cancelled,\n"
	"resync_done, peer, notify_delivered|notify_failed. The first line,\n"
	"subscribed, says the stream is open: every later event is printed.\n"
	"With --json, one JSON object a line (the fields are in resyncctl(8)).\n";

static void event_line(json_object *o)
{
	const char *ev = resyncctl_jstr(o, "event"), *t = resyncctl_jstr(o, "time"), *node = resyncctl_jstr(o, "node");
	char extra[1024] = "";
	size_t k = 0;

	/* "time event node key=value ..." in the order the daemon sent. */
	json_object_object_foreach(o, key, val)
	{
		if (!strcmp(key, "type") || !strcmp(key, "event") || !strcmp(key, "time") ||
		    !strcmp(key, "ts") || !strcmp(key, "cluster") || !strcmp(key, "node"))
			continue;
		if (k < sizeof(extra))
			k += (size_t)snprintf(extra + k, sizeof(extra) - k, " %s=%s", key,
					      json_object_get_string(val));
	}
	printf("%s %s%s%s%s\n", t ? t : "-", ev ? ev : "?", node ? " " : "", node ? node : "",
	       extra);
}

/* The daemon's first line ({"type":"stream"}) says this client is
 * subscribed: every event published after it reaches the client. It is
 * shown as the event "subscribed", so that a script can wait for it
 * before it starts what it wants to watch. Returns a new object. */
static json_object *subscribed_event(json_object *stream)
{
	json_object *o = json_object_new_object();
	const char *cluster = resyncctl_jstr(stream, "cluster");
	int64_t now = clock_real_usec();
	char t[64];

	clock_format_utc(now, true, t, sizeof(t));
	json_object_object_add(o, "type", json_object_new_string("event"));
	json_object_object_add(o, "event", json_object_new_string("subscribed"));
	json_object_object_add(o, "cluster", json_object_new_string(cluster ? cluster : ""));
	json_object_object_add(o, "time", json_object_new_string(t));
	json_object_object_add(o, "ts", json_object_new_double((double)now / 1e6));
	return o;
}

/* Cleanup for a session on the stack (open or not). */
static void session_cleanup(struct resyncctl_session *s)
{
	resyncctl_session_close(s);
}

int resyncctl_events(int argc, char **argv)
{
	_cleanup_(session_cleanup) struct resyncctl_session s = {.fd = -1};
	json_object *req;
	bool json = false;
	int fd, r;

	if (resyncctl_parse_opts(argc, argv, events_usage, &json, 0) < 0)
		return EXIT_USAGE;
	r = resyncctl_session_open(&s);
	if (r)
		return r;
	fd = s.fd;
	req = json_object_new_object();
	json_object_object_add(req, "cmd", json_object_new_string("events"));
	r = control_send(fd, req);
	json_object_put(req);
	if (r < 0) {
		resyncctl_errorf("cannot send the request: %s", strerror(-r));
		return 1;
	}
	/* Line by line, so that a pipe sees each event at once. */
	setvbuf(stdout, NULL, _IOLBF, 0);
	for (;;) {
		json_object *o = NULL;
		const char *type;

		r = control_recv(fd, -1, &o);
		if (r == -ECONNRESET)
			return 0; /* the daemon stopped */
		if (r < 0) {
			resyncctl_errorf("reading events: %s", strerror(-r));
			return 1;
		}
		type = resyncctl_jstr(o, "type");
		if (type && !strcmp(type, "stream")) {
			json_object *e = subscribed_event(o);

			json_object_put(o);
			o = e;
			type = "event";
		}
		if (type && !strcmp(type, "result")) {
			resyncctl_errorf("%s", resyncctl_jstr(o, "error") ? resyncctl_jstr(o, "error") : "the stream ended");
			json_object_put(o);
			return 1;
		}
		if (type && !strcmp(type, "event")) {
			if (json)
				puts(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
			else
				event_line(o);
		} else if (type && !strcmp(type, "dropped") && !json) {
			printf("(%s events dropped: this reader fell behind)\n", resyncctl_jstr(o, "count"));
		}
		json_object_put(o);
		if (ferror(stdout))
			return 1;
	}
}

/* ---- pause, resume, rate ---- */

static int pace_request(json_object *req, bool json)
{
	_cleanup_(session_cleanup) struct resyncctl_session s = {.fd = -1};
	json_object *res = NULL, *v;
	int fd, r;

	r = resyncctl_session_open(&s);
	if (r) {
		json_object_put(req);
		return r;
	}
	fd = s.fd;
	r = control_send(fd, req);
	json_object_put(req);
	if (r >= 0)
		r = control_recv(fd, 30000, &res);
	if (r < 0) {
		resyncctl_errorf("no answer from the daemon: %s", strerror(-r));
		return 1;
	}
	if (!json_object_object_get_ex(res, "ok", &v) || !json_object_get_boolean(v)) {
		resyncctl_errorf("%s", resyncctl_jstr(res, "error") ? resyncctl_jstr(res, "error") : "refused");
		json_object_put(res);
		return 1;
	}
	if (json) {
		resyncctl_print_result(res);
	} else {
		uint64_t rate = json_object_get_uint64(json_object_object_get(res, "max_rate"));

		if (json_object_get_boolean(json_object_object_get(res, "paused")))
			puts("the running resync is paused");
		else if (rate)
			printf("the running resync goes at most %llu bytes/s\n", (unsigned long long)rate);
		else
			puts("the running resync goes at full speed");
	}
	json_object_put(res);
	return 0;
}

static const char pause_usage[] =
	"usage: resyncctl pause [--config FILE] [--node NAME] [--json]\n"
	"Hold the running resync: no block is sent until `resyncctl resume`.\n"
	"Secondaries stay fenced and Inconsistent while paused.\n";
static const char resume_usage[] =
	"usage: resyncctl resume [--config FILE] [--node NAME] [--json]\n"
	"Let a paused resync go on.\n";
static const char rate_usage[] =
	"usage: resyncctl rate [--config FILE] [--node NAME] [--json] RATE\n"
	"Change the running resync's maximum rate, in bytes per second (K, M, G\n"
	"suffixes, powers of 1024; 0 = unlimited), from now on. The next resync\n"
	"starts again from max_rate or its own --max-rate.\n";

static int pace_cmd(int argc, char **argv, const char *cmd, const char *usage)
{
	bool json = false, is_rate = !strcmp(cmd, "rate");
	json_object *req;
	uint64_t rate = 0;

	if (resyncctl_parse_opts(argc, argv, usage, &json, is_rate ? 1 : 0) < 0)
		return EXIT_USAGE;
	if (is_rate && parse_size(argv[optind], &rate) < 0) {
		resyncctl_errorf("'%s' is not a rate (bytes per second, with K, M or G)", argv[optind]);
		fputs(usage, stderr);
		return EXIT_USAGE;
	}
	req = json_object_new_object();
	json_object_object_add(req, "cmd", json_object_new_string(cmd));
	if (is_rate)
		json_object_object_add(req, "rate", json_object_new_int64((int64_t)rate));
	return pace_request(req, json);
}

int resyncctl_pause(int argc, char **argv)
{
	return pace_cmd(argc, argv, "pause", pause_usage);
}

int resyncctl_resume(int argc, char **argv)
{
	return pace_cmd(argc, argv, "resume", resume_usage);
}

int resyncctl_rate(int argc, char **argv)
{
	return pace_cmd(argc, argv, "rate", rate_usage);
}
