/* What resyncctl's daemon commands share: errors, the node to talk to,
 * a request over the control socket, JSON accessors, common options. */
#include <errno.h>
#include <getopt.h>
#include <json-c/json.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "resync/config.h"
#include "resync/control.h"
#include "resyncctl.h"

const char *resyncctl_config = "/etc/resync/cluster.conf";
const char *resyncctl_node;

void resyncctl_errorf(const char *fmt, ...)
{
	va_list ap;

	fputs("resyncctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static bool is_socket(const char *path)
{
	struct stat st;

	return path && stat(path, &st) == 0 && S_ISSOCK(st.st_mode);
}

/* The node to talk to: --node, else the one whose control socket exists
 * here (the primary's first when several do), else the only one. */
static const struct node_config *pick_node(const struct cluster_config *cfg)
{
	const struct node_config *p = cluster_config_primary(cfg);

	if (resyncctl_node) {
		const struct node_config *n = cluster_config_node(cfg, resyncctl_node);

		if (!n)
			resyncctl_errorf("'%s' has no node '%s'", cfg->path, resyncctl_node);
		return n;
	}
	if (p && is_socket(p->control))
		return p;
	for (size_t i = 0; i < cfg->n_nodes; i++)
		if (is_socket(cfg->nodes[i].control))
			return &cfg->nodes[i];
	if (cfg->n_nodes == 1)
		return &cfg->nodes[0];
	resyncctl_errorf("no control socket of cluster '%s' exists on this machine (is resyncd running?); "
	       "name the node with --node",
	       cfg->name);
	return NULL;
}

int resyncctl_session_open(struct resyncctl_session *s)
{
	char err[1024];
	int r;

	s->fd = -1;
	s->cfg = NULL;
	s->node = NULL;
	r = cluster_config_load(resyncctl_config, err, sizeof(err), &s->cfg);
	if (r < 0) {
		resyncctl_errorf("%s", err[0] ? err : strerror(-r));
		return RESYNCCTL_EXIT_FAILURE;
	}
	s->node = pick_node(s->cfg);
	if (!s->node) /* a --node the file lacks, or no socket here */
		return resyncctl_node ? RESYNCCTL_EXIT_FAILURE : RESYNCCTL_EXIT_UNREACHABLE;
	if (!s->node->control) {
		resyncctl_errorf("node '%s' has no 'control' socket in '%s'", s->node->name, s->cfg->path);
		return RESYNCCTL_EXIT_FAILURE;
	}
	r = control_connect(s->node->control, &s->fd);
	if (r == -EACCES || r == -EPERM) {
		resyncctl_errorf("cannot reach node '%s' at '%s': permission denied (the control socket "
				 "is its owner's only: run as root or that user)",
				 s->node->name, s->node->control);
		return RESYNCCTL_EXIT_FAILURE;
	}
	if (r < 0) {
		resyncctl_errorf("cannot reach node '%s' at '%s': %s (is resyncd running?)", s->node->name,
		       s->node->control, strerror(-r));
		return RESYNCCTL_EXIT_UNREACHABLE;
	}
	return 0;
}

void resyncctl_session_close(struct resyncctl_session *s)
{
	if (s->fd >= 0)
		close(s->fd);
	cluster_config_free(s->cfg);
}

/* Send req, pass stream lines to fn, return the result line (caller puts)
 * or NULL after printing why. */
bool resyncctl_send(struct resyncctl_session *s, json_object *req)
{
	int r = control_send(s->fd, req);

	if (r < 0)
		resyncctl_errorf("cannot talk to node '%s': %s", s->node->name, strerror(-r));
	return r >= 0;
}

json_object *resyncctl_request(struct resyncctl_session *s, json_object *req,
				 resyncctl_line_fn fn, void *arg)
{
	if (!resyncctl_send(s, req))
		return NULL;
	return resyncctl_result(s, fn, arg);
}

json_object *resyncctl_result(struct resyncctl_session *s, resyncctl_line_fn fn, void *arg)
{
	int r;

	for (;;) {
		json_object *o = NULL;

		r = control_recv(s->fd, -1, &o);
		if (r < 0) {
			resyncctl_errorf("node '%s' went away: %s", s->node->name, strerror(-r));
			return NULL;
		}
		if (control_is_result(o))
			return o;
		if (fn)
			fn(arg, o);
		json_object_put(o);
	}
}

bool resyncctl_result_ok(json_object *res)
{
	json_object *v;

	if (json_object_object_get_ex(res, "ok", &v) && json_object_get_boolean(v))
		return true;
	resyncctl_errorf("%s", json_object_object_get_ex(res, "error", &v) ? json_object_get_string(v)
								 : "request failed");
	return false;
}

const char *resyncctl_jstr(json_object *o, const char *key)
{
	json_object *v;

	if (!json_object_object_get_ex(o, key, &v) || !v)
		return NULL;
	return json_object_get_string(v);
}

uint64_t resyncctl_ju64(json_object *o, const char *key)
{
	json_object *v;

	if (!json_object_object_get_ex(o, key, &v) || !v)
		return 0;
	return json_object_get_uint64(v);
}

double resyncctl_jdbl(json_object *o, const char *key)
{
	json_object *v;

	if (!json_object_object_get_ex(o, key, &v) || !v)
		return 0;
	return json_object_get_double(v);
}

json_object *resyncctl_jnodes(json_object *o)
{
	json_object *v;

	if (!json_object_object_get_ex(o, "nodes", &v) || !json_object_is_type(v, json_type_array))
		return NULL;
	return v;
}

void resyncctl_print_json(json_object *o)
{
	puts(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
	fflush(stdout);
}

void resyncctl_print_result(json_object *res)
{
	json_object_object_del(res, "type");
	json_object_object_del(res, "ok");
	resyncctl_print_json(res);
}

/* Options every daemon command takes: --config, --node, --json, --help;
 * then exactly nargs operands. Returns the index of the first operand, or
 * -1 after printing the usage (a usage error). --help exits 0. */
int resyncctl_parse_opts(int argc, char **argv, const char *usage, bool *json, int nargs)
{
	static const struct option longopts[] = {
		{"config", required_argument, NULL, 'c'},
		{"node", required_argument, NULL, 'n'},
		{"json", no_argument, NULL, 'j'},
		{"help", no_argument, NULL, 'h'},
		{0},
	};
	int c;

	optind = 1;
	while ((c = getopt_long(argc, argv, "c:n:jh", longopts, NULL)) != -1) {
		switch (c) {
		case 'c':
			resyncctl_config = optarg;
			break;
		case 'n':
			resyncctl_node = optarg;
			break;
		case 'j':
			*json = true;
			break;
		case 'h':
			fputs(usage, stdout);
			exit(0);
		default:
			fputs(usage, stderr);
			return -1;
		}
	}
	if (argc - optind != nargs) {
		fputs(usage, stderr);
		return -1;
	}
	return optind;
}

bool resyncctl_confirm(const char *cluster)
{
	char line[256];

	printf("type the cluster name '%s' to go on: ", cluster);
	fflush(stdout);
	if (!fgets(line, sizeof(line), stdin))
		return false;
	line[strcspn(line, "\n")] = 0;
	return !strcmp(line, cluster);
}
