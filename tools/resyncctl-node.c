/* resyncctl's commands that erase on one node and make it act: rollback
 * (what the last resync overwrote there, put back) and promote --force (a
 * named primary that refused its role acts as primary anyway), each
 * confirmed like a resync. */
#include <json-c/json.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "resync/config.h"
#include "resyncctl.h"

#define EXIT_USAGE RESYNCCTL_EXIT_USAGE

/* The options of an erasing command: --yes, --json, --force (with force
 * only), one word (with arg only; NULL when absent), --help (help printed:
 * 1). 0, 1, or -1 with the usage said. */
static int erasing_opts(int argc, char **argv, const char *help, bool *yes, bool *json,
			bool *force, const char **arg)
{
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--yes")) {
			*yes = true;
		} else if (!strcmp(argv[i], "--json")) {
			*json = true;
		} else if (force && !strcmp(argv[i], "--force")) {
			*force = true;
		} else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			fputs(help, stdout);
			return 1;
		} else if (arg && argv[i][0] != '-' && !*arg) {
			*arg = argv[i];
		} else {
			resyncctl_errorf("%.*s", (int)strcspn(help, "\n"), help);
			return -1;
		}
	}
	return 0;
}

/* An erasing request (req: its "cmd" and fields; "confirm" is added here,
 * and req is released) once confirmed: --yes, or the cluster's name typed
 * after what is printed; without a terminal, no_tty is the error. Its
 * result, or NULL (said) when not confirmed, refused or failed. */
static json_object *erasing_request(struct resyncctl_session *s, json_object *req, bool yes,
				    const char *what, const char *no_tty)
{
	json_object *res;

	if (!yes) {
		if (!isatty(STDIN_FILENO)) {
			resyncctl_errorf("%s", no_tty);
			json_object_put(req);
			return NULL;
		}
		fputs(what, stdout);
		if (!resyncctl_confirm(s->cfg->name)) {
			resyncctl_errorf("not confirmed; nothing was changed");
			json_object_put(req);
			return NULL;
		}
	}
	json_object_object_add(req, "confirm", json_object_new_string(s->cfg->name));
	res = resyncctl_request(s, req, NULL, NULL);
	json_object_put(req);
	if (!res || !resyncctl_result_ok(res)) {
		json_object_put(res);
		return NULL;
	}
	return res;
}

/* rollback NODE [--yes] [--json]: put back what the last resync
 * overwrote on NODE, from its undo journal. */
int resyncctl_rollback(int argc, char **argv)
{
	struct resyncctl_session s = {0};
	char what[512], no_tty[512];
	json_object *req, *res;
	const char *node = NULL;
	bool json = false, yes = false;
	int rc = 1, r;

	r = erasing_opts(argc, argv,
			 "usage: resyncctl [--config FILE] [--node NAME] rollback NODE [--yes] [--json]\n\n"
			 "Put back on NODE what the last resync overwrote there, from its undo\n"
			 "journal: its data, generation and state from before that resync.\n"
			 "It erases what NODE holds now: confirm by typing the cluster's name,\n"
			 "or pass --yes.\n",
			 &yes, &json, NULL, &node);
	if (r)
		return r > 0 ? 0 : EXIT_USAGE;
	if (!node) {
		resyncctl_errorf("usage: resyncctl rollback NODE [--yes] [--json]");
		return EXIT_USAGE;
	}
	rc = resyncctl_session_open(&s);
	if (rc)
		goto out;
	rc = 1;
	snprintf(what, sizeof(what),
		 "This erases what '%s' holds now and puts back its data from before its last "
		 "resync.\n", node);
	snprintf(no_tty, sizeof(no_tty),
		 "no terminal to confirm on: pass --yes to erase what '%s' holds now and put back "
		 "its data from before its last resync", node);
	req = json_object_new_object();
	json_object_object_add(req, "cmd", json_object_new_string("rollback"));
	json_object_object_add(req, "node", json_object_new_string(node));
	res = erasing_request(&s, req, yes, what, no_tty);
	if (!res)
		goto out;
	if (json) {
		resyncctl_print_result(res);
	} else {
		printf("'%s' rolled back: %llu bytes put back\n", node,
		       (unsigned long long)json_object_get_uint64(json_object_object_get(res, "bytes")));
	}
	json_object_put(res);
	rc = 0;
out:
	resyncctl_session_close(&s);
	return rc;
}

/* promote --force [--yes] [--json]: the node this talks to, named primary
 * and refusing the role (its volume Inconsistent), acts as primary with
 * the data it holds. */
int resyncctl_promote(int argc, char **argv)
{
	struct resyncctl_session s = {0};
	json_object *req, *res;
	bool json = false, yes = false, force = false;
	int rc = 1, r;

	r = erasing_opts(argc, argv,
			 "usage: resyncctl [--config FILE] [--node NAME] promote --force [--yes] "
			 "[--json]\n\n"
			 "Make the node this talks to (the local one, or --node) act as primary\n"
			 "with the data it holds, when the configuration or etcd's leader key\n"
			 "names it primary and it refused the role because its volume is\n"
			 "Inconsistent (a resync stopped half-way): as DRBD's primary --force,\n"
			 "for when no node with good data is left. Its data becomes the cluster's:\n"
			 "the next resync erases what differs on every other node. Confirm by\n"
			 "typing the cluster's name, or pass --yes.\n",
			 &yes, &json, &force, NULL);
	if (r)
		return r > 0 ? 0 : EXIT_USAGE;
	if (!force) {
		resyncctl_errorf("promote needs --force: the primary is the node the configuration or "
				 "etcd's leader key names; this only overrides its refusal of the role");
		return EXIT_USAGE;
	}
	rc = resyncctl_session_open(&s);
	if (rc)
		goto out;
	rc = 1;
	req = json_object_new_object();
	json_object_object_add(req, "cmd", json_object_new_string("promote"));
	json_object_object_add(req, "force", json_object_new_boolean(true));
	res = erasing_request(&s, req, yes,
			      "This node will act as primary with the data it holds, though a resync "
			      "stopped half-way through it.\nThe next resync erases what differs on "
			      "every other node and replaces it with this data.\n",
			      "no terminal to confirm on: pass --yes to make this node act as primary "
			      "with the data it holds; nothing was changed");
	if (!res)
		goto out;
	if (json) {
		resyncctl_print_result(res);
	} else {
		printf("%s\n", json_object_get_string(json_object_object_get(res, "message")));
	}
	json_object_put(res);
	rc = 0;
out:
	resyncctl_session_close(&s);
	return rc;
}
