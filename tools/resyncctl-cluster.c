/* resyncctl's cluster commands: status, verify, resync and cancel, spoken
 * to the local resyncd over its control socket (JSON, one object a line). */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "resync/config.h"
#include "resync/control.h"
#include "resync/macro.h"
#include "resync/parse.h"
#include "resyncctl.h"

#define EXIT_USAGE RESYNCCTL_EXIT_USAGE

/* ---- status ---- */

/* etcd as the node asked sees it (issue 14): reachable or not, the
 * leader key, the resync lock. */
static void status_print_etcd(json_object *res)
{
	json_object *e;

	if (!json_object_object_get_ex(res, "etcd", &e) || !e)
		return;
	if (json_object_get_boolean(json_object_object_get(e, "reachable")))
		printf("etcd: reachable at %s; leader key %s = %s; resync lock: %s\n",
		       resyncctl_jstr(e, "endpoint"), resyncctl_jstr(e, "leader_key"),
		       resyncctl_jstr(e, "leader") ? resyncctl_jstr(e, "leader") : "(absent)",
		       resyncctl_jstr(e, "lock") ? resyncctl_jstr(e, "lock") : "free");
	else
		printf("etcd: UNREACHABLE: %s (no resync can start)\n", resyncctl_jstr(e, "error"));
}

static const char status_usage[] =
	"usage: resyncctl [--config FILE] [--node NAME] status [--json]\n"
	"Show the cluster: its name, its primary, and per node its role, state,\n"
	"generation, dirty bytes, the bytes it lacks of the primary's (\"?\": unknown),\n"
	"whether it is connected, and its last resync: the primary's view, asked now.\n";

/* Under the table, what a node's row cannot say: split brain and why,
 * a primary's role refused, the undo window a rollback can use, and a
 * proof that did not match. */
static void status_print_notes(json_object *nodes)
{
	for (size_t i = 0; nodes && i < json_object_array_length(nodes); i++) {
		json_object *n = json_object_array_get_idx(nodes, i), *u, *p;
		const char *name = resyncctl_jstr(n, "name");
		char b[32];

		if (json_object_get_boolean(json_object_object_get(n, "split_brain")))
			printf("%s: SPLIT BRAIN: %s (resync refuses it without --force %s)\n", name,
			       resyncctl_jstr(n, "reason") ? resyncctl_jstr(n, "reason") : "?", name);
		if (resyncctl_jstr(n, "promotion_refused"))
			printf("%s: NOT ACTING AS PRIMARY: %s\n", name,
			       resyncctl_jstr(n, "promotion_refused"));
		if (json_object_object_get_ex(n, "undo", &u) && u)
			printf("%s: undo window: %s saved, restores %s, until %s%s (resyncctl rollback %s)\n",
			       name, format_bytes(resyncctl_ju64(u, "saved_bytes"), b, sizeof(b)),
			       resyncctl_jstr(u, "restores_state") ? resyncctl_jstr(u, "restores_state") : "?",
			       resyncctl_jstr(u, "until") ? resyncctl_jstr(u, "until") : "?",
			       json_object_get_boolean(json_object_object_get(u, "rollback_interrupted"))
				   ? "; a rollback was interrupted: run it again"
				   : "",
			       name);
		if (json_object_object_get_ex(n, "proof", &p) && p &&
		    !json_object_get_boolean(json_object_object_get(p, "match")))
			printf("%s: PROOF MISMATCH at the last resync: its root %s, the primary's %s\n", name,
			       resyncctl_jstr(p, "root") ? resyncctl_jstr(p, "root") : "?",
			       resyncctl_jstr(p, "primary_root") ? resyncctl_jstr(p, "primary_root") : "?");
	}
}

int resyncctl_status(int argc, char **argv)
{
	struct resyncctl_session s = {0};
	json_object *req, *res, *nodes;
	bool json = false;
	char b[32];
	int rc = 1;

	if (resyncctl_parse_opts(argc, argv, status_usage, &json, 0) < 0)
		return EXIT_USAGE;
	rc = resyncctl_session_open(&s);
	if (rc)
		goto out;
	rc = 1;
	req = json_object_new_object();
	json_object_object_add(req, "cmd", json_object_new_string("status"));
	res = resyncctl_request(&s, req, NULL, NULL);
	json_object_put(req);
	if (!res)
		goto out;
	if (!resyncctl_result_ok(res)) {
		json_object_put(res);
		goto out;
	}
	nodes = resyncctl_jnodes(res);
	if (json) {
		resyncctl_print_result(res);
	} else {
		printf("cluster: %s\nprimary: %s\n", resyncctl_jstr(res, "cluster"),
		       resyncctl_jstr(res, "primary") ? resyncctl_jstr(res, "primary") : "(none)");
		if (resyncctl_jstr(res, "primary_error"))
			printf("the primary's view is missing: %s\n", resyncctl_jstr(res, "primary_error"));
		status_print_etcd(res);
		printf("%-16s %-10s %-13s %-9s %-12s %-12s %-20s %-36s %-20s %s\n", "NODE", "ROLE",
		       "STATE", "CONNECTED", "DIRTY", "LACKS", "LAST RESYNC", "GENERATION",
		       "LAST VERIFY", "VERIFY");
		for (size_t i = 0; nodes && i < json_object_array_length(nodes); i++) {
			json_object *n = json_object_array_get_idx(nodes, i), *d, *l;
			bool dk = json_object_object_get_ex(n, "dirty_bytes", &d) && d;
			/* lacks: null (unknown: "?"), absent (the primary: "-") */
			bool lh = json_object_object_get_ex(n, "lacks_bytes", &l);
			/* The last verify's differing bytes: "-" unknown (or
			 * the primary), "same" when none differed. */
			json_object *vd;
			bool vk = json_object_object_get_ex(n, "verify_differing_bytes", &vd) && vd;
			char lb[32], vb[32];

			if (vk && resyncctl_ju64(n, "verify_differing_bytes"))
				format_bytes(resyncctl_ju64(n, "verify_differing_bytes"), vb, sizeof(vb));
			else
				snprintf(vb, sizeof(vb), "%s", vk ? "same" : "-");
			printf("%-16s %-10s %-13s %-9s %-12s %-12s %-20s %-36s %-20s %s\n",
			       resyncctl_jstr(n, "name"),
			       resyncctl_jstr(n, "role"), resyncctl_jstr(n, "state"),
			       json_object_get_boolean(json_object_object_get(n, "connected")) ? "yes"
											      : "no",
			       dk ? format_bytes(resyncctl_ju64(n, "dirty_bytes"), b, sizeof(b)) : "-",
			       !lh ? "-" : l ? format_bytes(resyncctl_ju64(n, "lacks_bytes"), lb, sizeof(lb)) : "?",
			       resyncctl_jstr(n, "last_resync") ? resyncctl_jstr(n, "last_resync") : "never",
			       resyncctl_jstr(n, "generation") ? resyncctl_jstr(n, "generation") : "-",
			       resyncctl_jstr(n, "last_verify") ? resyncctl_jstr(n, "last_verify") : "never",
			       vb);
		}
		status_print_notes(nodes);
	}
	json_object_put(res);
	rc = 0;
out:
	resyncctl_session_close(&s);
	return rc;
}

/* ---- verify ---- */

static const char verify_usage[] =
	"usage: resyncctl [--config FILE] [--node NAME] verify [--json]\n"
	"Compare every secondary with the primary through hashes, writing nothing.\n"
	"Exit 0 when every secondary is identical, 1 when any differs, 2 on error,\n"
	"3 when a node could not be reached.\n";

int resyncctl_verify(int argc, char **argv)
{
	struct resyncctl_session s = {0};
	json_object *req, *res, *nodes, *out, *arr;
	bool json = false, differs = false, failed = false;
	char b[32];
	int r;

	if (resyncctl_parse_opts(argc, argv, verify_usage, &json, 0) < 0)
		return EXIT_USAGE;
	r = resyncctl_session_open(&s);
	if (r) {
		resyncctl_session_close(&s);
		return r == RESYNCCTL_EXIT_UNREACHABLE ? r : 2;
	}
	req = json_object_new_object();
	json_object_object_add(req, "cmd", json_object_new_string("verify"));
	res = resyncctl_request(&s, req, NULL, NULL);
	json_object_put(req);
	if (!res || !resyncctl_result_ok(res)) {
		json_object_put(res);
		resyncctl_session_close(&s);
		return 2;
	}
	nodes = resyncctl_jnodes(res);
	out = json_object_new_object();
	arr = json_object_new_array();
	for (size_t i = 0; nodes && i < json_object_array_length(nodes); i++) {
		json_object *n = json_object_array_get_idx(nodes, i), *x, *rg;
		const char *err = resyncctl_jstr(n, "error");

		if (err) {
			failed = true;
			resyncctl_errorf("%s", err);
		}
		if (resyncctl_ju64(n, "differing_bytes"))
			differs = true;
		x = json_object_new_object();
		json_object_object_add(x, "name", json_object_new_string(resyncctl_jstr(n, "name")));
		json_object_object_add(x, "differing_blocks",
				       json_object_new_uint64(resyncctl_ju64(n, "differing_blocks")));
		json_object_object_add(x, "differing_bytes",
				       json_object_new_uint64(resyncctl_ju64(n, "differing_bytes")));
		json_object_object_get_ex(n, "ranges", &rg);
		json_object_object_add(x, "ranges", json_object_get(rg));
		if (err)
			json_object_object_add(x, "error", json_object_new_string(err));
		json_object_array_add(arr, x);
		if (!json) {
			if (err) {
				printf("%s: error\n", resyncctl_jstr(n, "name"));
				continue;
			}
			printf("%s: %s", resyncctl_jstr(n, "name"),
			       resyncctl_ju64(n, "differing_bytes") ? "differs" : "identical");
			if (resyncctl_ju64(n, "differing_bytes"))
				printf(", %" PRIu64 " blocks, %s in %zu ranges",
				       resyncctl_ju64(n, "differing_blocks"),
				       format_bytes(resyncctl_ju64(n, "differing_bytes"), b, sizeof(b)),
				       rg ? json_object_array_length(rg) : 0);
			putchar('\n');
			for (size_t k = 0; rg && k < json_object_array_length(rg) && k < 20; k++) {
				json_object *e = json_object_array_get_idx(rg, k);

				printf("  %" PRIu64 "+%" PRIu64 "\n",
				       json_object_get_uint64(json_object_array_get_idx(e, 0)),
				       json_object_get_uint64(json_object_array_get_idx(e, 1)));
			}
		}
	}
	json_object_object_add(out, "nodes", arr);
	if (json)
		resyncctl_print_json(out);
	json_object_put(out);
	json_object_put(res);
	resyncctl_session_close(&s);
	/* A secondary the primary could not compare is one it could not
	 * reach (its error says why). */
	return failed ? RESYNCCTL_EXIT_UNREACHABLE : differs ? 1 : 0;
}

/* ---- resync ---- */

/* What the resync request carries besides the plan's token, and
 * whether it went. With --yes it goes the moment the plan's token comes
 * in its own line ("token_first", resyncd(8)), before the plan's result,
 * over a MB of JSON at 10 % of a few GiB, is read. */
struct resync_ask {
	struct resyncctl_session *s;
	json_object *names, *force;
	bool have_rate, whole, undo;
	uint64_t rate;
	const char *delta;
	bool sent, failed;
};

/* Send the resync request (typed or --yes: the daemon runs an erasing
 * request only when it names the cluster), with the plan's token when
 * there is one: the plan's connections and walks, kept by the primary a
 * short while for this resync (it checks them again). */
static bool resync_send(struct resync_ask *a, const char *token)
{
	json_object *req = json_object_new_object();

	json_object_object_add(req, "cmd", json_object_new_string("resync"));
	json_object_object_add(req, "confirm", json_object_new_string(a->s->cfg->name));
	json_object_object_add(req, "nodes", json_object_get(a->names));
	/* The summary shows no ranges: the reply need not carry them. */
	json_object_object_add(req, "no_ranges", json_object_new_boolean(true));
	if (a->have_rate)
		json_object_object_add(req, "max_rate", json_object_new_uint64(a->rate));
	json_object_object_add(req, "fence", json_object_new_string(a->whole ? "whole" : "short"));
	if (a->undo)
		json_object_object_add(req, "undo", json_object_new_boolean(true));
	if (a->delta)
		json_object_object_add(req, "delta", json_object_new_string(a->delta));
	if (json_object_array_length(a->force))
		json_object_object_add(req, "force", json_object_get(a->force));
	if (token)
		json_object_object_add(req, "plan_token", json_object_new_string(token));
	a->sent = resyncctl_send(a->s, req);
	a->failed = !a->sent;
	json_object_put(req);
	return a->sent;
}

/* The plan's lines before its result: its token's, with --yes. */
static void plan_line(void *arg, json_object *line)
{
	struct resync_ask *a = arg;
	const char *type = resyncctl_jstr(line, "type"), *token = resyncctl_jstr(line, "plan_token");

	if (!a->sent && !a->failed && type && !strcmp(type, "plan_kept") && token)
		resync_send(a, token);
}

static const char resync_usage[] =
	"usage: resyncctl [--config FILE] [--node NAME] resync [--yes] [--dry-run] [--undo] [--json]\n"
	"                 [--node SECONDARY]... [--max-rate RATE] [--fence short|whole]\n"
	"                 [--force NODE]... [--delta auto|aligned|rolling]\n"
	"Make every secondary (or the ones named) byte-identical to the primary.\n"
	"The data on those secondaries is erased and replaced with the primary's.\n"
	"The primary stays in service: its writes wait only during the last pass\n"
	"(--fence short, the default: at most the cluster's fence_max), or for the\n"
	"whole resync (--fence whole; the cluster's 'fence' sets the default).\n"
	"Shows the plan, then asks to type the cluster name; without a terminal\n"
	"it needs --yes. --dry-run shows the plan only. Exit 0 only when every\n"
	"chosen secondary ends UpToDate; 3 when a node could not be reached.\n"
	"A node in split brain (it wrote as primary under a generation the primary\n"
	"never had) is refused unless --force NODE names it; its old data then goes\n"
	"to its undo journal (undo = diverged, the default, or on).\n"
	"--delta: how a full compare finds what to send: auto (the default, or the\n"
	"cluster's 'delta') copies data a secondary holds at another offset (moved\n"
	"blocks, and data shifted by any number of bytes where the search costs\n"
	"less than sending); rolling searches every differing region whatever it\n"
	"costs; aligned sends what differs at its own offset only.\n";

#define PROGRESS_NODES_MAX 64

/* On a terminal, one live line per secondary redrawn in place; otherwise
 * plain lines, one per progress report. */
struct progress_ctx {
	bool json;
	bool tty;
	unsigned drawn; /* lines of the live block on screen */
	unsigned n;
	struct progress_line {
		char node[64];
		char text[256];
	} lines[PROGRESS_NODES_MAX];
};

static void progress_format(json_object *o, char *buf, size_t size)
{
	char a[32], b[32], c[32], d[32];
	double eta = resyncctl_jdbl(o, "eta");

	snprintf(buf, size, "%s: %s %s of %s, compared %s, sent %s, %.1f MiB/s, eta %.0fs",
		 resyncctl_jstr(o, "node"), resyncctl_jstr(o, "phase"),
		 format_bytes(resyncctl_ju64(o, "bytes_done"), a, sizeof(a)),
		 format_bytes(resyncctl_ju64(o, "bytes_total"), b, sizeof(b)),
		 format_bytes(resyncctl_ju64(o, "bytes_compared"), c, sizeof(c)),
		 format_bytes(resyncctl_ju64(o, "bytes_sent"), d, sizeof(d)), resyncctl_jdbl(o, "rate") / (1 << 20),
		 eta > 0 ? eta : 0);
}

static void resync_progress(void *arg, json_object *o)
{
	struct progress_ctx *p = arg;
	const char *node = resyncctl_jstr(o, "node");
	struct progress_line *l = NULL;

	if (p->json) {
		resyncctl_print_json(o);
		return;
	}
	if (!p->tty) {
		char text[256];

		progress_format(o, text, sizeof(text));
		fprintf(stderr, "%s\n", text);
		return;
	}
	for (unsigned i = 0; i < p->n; i++)
		if (!strcmp(p->lines[i].node, node ? node : ""))
			l = &p->lines[i];
	if (!l) {
		if (p->n == PROGRESS_NODES_MAX)
			return;
		l = &p->lines[p->n++];
		snprintf(l->node, sizeof(l->node), "%s", node ? node : "");
	}
	progress_format(o, l->text, sizeof(l->text));
	/* Back to the top of the block, then every line cleared and redrawn. */
	if (p->drawn)
		fprintf(stderr, "\r\033[%uA", p->drawn);
	for (unsigned i = 0; i < p->n; i++)
		fprintf(stderr, "\r\033[2K%s\n", p->lines[i].text);
	p->drawn = p->n;
	fflush(stderr);
}

/* Whether a rollback will be possible, per node, and a journal that may
 * not hold what the resync overwrites. */
static void plan_print_undo(json_object *n)
{
	const char *name = resyncctl_jstr(n, "name");
	char a[32], b[32];

	if (!json_object_get_boolean(json_object_object_get(n, "undo"))) {
		printf("  %-16s undo: none (what is overwritten there cannot be rolled back)\n", name);
		return;
	}
	printf("  %-16s undo: journaled, up to %s before compression (limit %s): "
	       "resyncctl rollback %s can put it back\n",
	       name, format_bytes(resyncctl_ju64(n, "undo_bytes"), a, sizeof(a)),
	       format_bytes(resyncctl_ju64(n, "undo_max_bytes"), b, sizeof(b)), name);
	if (json_object_get_boolean(json_object_object_get(n, "undo_may_exceed")))
		printf("  %-16s WARNING: the journal may exceed undo_max_bytes unless the data "
		       "compresses; if it fills, this node's resync stops there (Inconsistent, "
		       "what was overwritten so far can be rolled back)\n", name);
}

int resyncctl_resync(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"config", required_argument, NULL, 'c'},
		{"node", required_argument, NULL, 'n'},
		{"yes", no_argument, NULL, 'y'},
		{"dry-run", no_argument, NULL, 'd'},
		{"json", no_argument, NULL, 'j'},
		{"max-rate", required_argument, NULL, 'r'},
		{"fence", required_argument, NULL, 'f'},
		{"undo", no_argument, NULL, 'u'},
		{"force", required_argument, NULL, 'F'},
		{"delta", required_argument, NULL, 'D'},
		{"help", no_argument, NULL, 'h'},
		{0},
	};
	bool undo = false;
	json_object *force = json_object_new_array();
	struct resyncctl_session s = {0};
	struct progress_ctx pc = {0};
	json_object *names = json_object_new_array(), *req, *res = NULL, *plan = NULL, *nodes;
	bool yes = false, dry = false, json = false, have_rate = false, all_ok = true;
	bool unreachable = false;
	struct resync_ask ask;
	uint64_t rate = 0;
	const char *fence = NULL; /* NULL: the cluster's */
	const char *delta = NULL; /* NULL: the cluster's */
	unsigned dv;
	bool whole;
	char b[32], c2[32], w[32];
	int c, rc = 1;

	optind = 1;
	while ((c = getopt_long(argc, argv, "c:n:ydjr:f:uh", longopts, NULL)) != -1) {
		switch (c) {
		case 'F':
			json_object_array_add(force, json_object_new_string(optarg));
			break;
		case 'u':
			undo = true;
			break;
		case 'D':
			if (config_delta_parse(optarg, &dv) < 0) {
				resyncctl_errorf("invalid --delta '%s': auto, aligned or rolling", optarg);
				json_object_put(names);
				json_object_put(force);
				return EXIT_USAGE;
			}
			delta = optarg;
			break;
		case 'f':
			if (strcmp(optarg, "short") && strcmp(optarg, "whole")) {
				resyncctl_errorf("invalid --fence '%s': short or whole", optarg);
				json_object_put(names);
				json_object_put(force);
				return EXIT_USAGE;
			}
			fence = optarg;
			break;
		case 'c':
			resyncctl_config = optarg;
			break;
		case 'n':
			json_object_array_add(names, json_object_new_string(optarg));
			break;
		case 'y':
			yes = true;
			break;
		case 'd':
			dry = true;
			break;
		case 'j':
			json = true;
			break;
		case 'r':
			if (parse_size(optarg, &rate) < 0) {
				resyncctl_errorf("invalid --max-rate '%s': bytes per second, with K, M or G",
				       optarg);
				json_object_put(names);
				json_object_put(force);
				return EXIT_USAGE;
			}
			have_rate = true;
			break;
		case 'h':
			fputs(resync_usage, stdout);
			json_object_put(names);
			json_object_put(force);
			return 0;
		default:
			fputs(resync_usage, stderr);
			json_object_put(names);
			json_object_put(force);
			return EXIT_USAGE;
		}
	}
	if (optind != argc) {
		fputs(resync_usage, stderr);
		json_object_put(names);
		json_object_put(force);
		return EXIT_USAGE;
	}
	pc.json = json;
	pc.tty = isatty(STDERR_FILENO);
	rc = resyncctl_session_open(&s);
	if (rc)
		goto out;
	rc = 1;

	/* The plan: a compare that writes nothing (quick where the resync
	 * will be quick: the union of both dirty bitmaps). */
	req = json_object_new_object();
	json_object_object_add(req, "cmd", json_object_new_string("verify"));
	json_object_object_add(req, "plan", json_object_new_boolean(true));
	if (!json)
		/* Shown without its ranges: the reply need not carry them. */
		json_object_object_add(req, "no_ranges", json_object_new_boolean(true));
	json_object_object_add(req, "nodes", json_object_get(names));
	if (json_object_array_length(force))
		json_object_object_add(req, "force", json_object_get(force));
	/* The plan says where undo applies: with --undo, everywhere. */
	if (undo)
		json_object_object_add(req, "undo", json_object_new_boolean(true));
	whole = fence ? !strcmp(fence, "whole") : s.cfg->fence == CONFIG_FENCE_WHOLE;
	if (yes && !dry)
		json_object_object_add(req, "token_first", json_object_new_boolean(true));
	ask = (struct resync_ask){&s, names, force, have_rate, whole, undo, rate, delta, false, false};
	plan = resyncctl_request(&s, req, yes && !dry ? plan_line : NULL, &ask);
	json_object_put(req);
	if (ask.failed || !plan || !resyncctl_result_ok(plan))
		goto out;
	nodes = resyncctl_jnodes(plan);
	for (size_t i = 0; nodes && i < json_object_array_length(nodes); i++)
		if (resyncctl_jstr(json_object_array_get_idx(nodes, i), "error"))
			unreachable = true;
	/* With --yes nothing waits for a reader: the resync goes first (at
	 * the plan's token line, or here for a primary that sends none) and
	 * the plan is shown while the primary starts it (a plan of 10 % of a
	 * 2 GiB volume is over a MB of JSON, a tenth of a second to print). */
	if (yes && !dry && !ask.sent && !resync_send(&ask, resyncctl_jstr(plan, "plan_token")))
		goto out;
	if (json) {
		json_object *o = json_object_new_object();

		json_object_object_add(o, "type", json_object_new_string("plan"));
		json_object_object_add(o, "cluster", json_object_new_string(s.cfg->name));
		json_object_object_add(o, "primary", json_object_new_string(resyncctl_jstr(plan, "primary")));
		json_object_object_add(o, "nodes", json_object_get(nodes));
		resyncctl_print_json(o);
		json_object_put(o);
	} else {
		printf("resync plan for cluster '%s' (primary '%s'):\n", s.cfg->name,
		       resyncctl_jstr(plan, "primary"));
		for (size_t i = 0; nodes && i < json_object_array_length(nodes); i++) {
			json_object *n = json_object_array_get_idx(nodes, i), *v;
			char lack[48], resume[64] = "";

			if (resyncctl_jstr(n, "error")) {
				printf("  %-16s unreachable: %s\n", resyncctl_jstr(n, "name"), resyncctl_jstr(n, "error"));
				continue;
			}
			if (json_object_object_get_ex(n, "lacking_bytes", &v) && v)
				format_bytes(resyncctl_ju64(n, "lacking_bytes"), lack, sizeof(lack));
			else
				snprintf(lack, sizeof(lack), "unknown bytes");
			if (json_object_object_get_ex(n, "resume_offset", &v) && v)
				snprintf(resume, sizeof(resume), ", resumes at %s",
					 format_bytes(resyncctl_ju64(n, "resume_offset"), w, sizeof(w)));
			printf("  %-16s state %-12s differs %-12s holds %s the primary lacks, "
			       "%s resync, transfer about %s%s\n",
			       resyncctl_jstr(n, "name"), resyncctl_jstr(n, "state"),
			       format_bytes(resyncctl_ju64(n, "differing_bytes"), b, sizeof(b)), lack,
			       resyncctl_jstr(n, "mode") ? resyncctl_jstr(n, "mode") : "full",
			       format_bytes(resyncctl_ju64(n, "differing_bytes"), c2, sizeof(c2)), resume);
			plan_print_undo(n);
		}
	}
	if (dry) {
		rc = 0;
		goto out;
	}
	if (!json) {
		printf("the data on these secondaries will be erased and replaced with the "
		       "primary's.\n");
		if (whole)
			printf("the primary's writes wait for the whole resync (whole fence).\n");
		else
			printf("the primary stays in service: its writes wait only during the last pass "
			       "(short fence, at most %.1f s).\n", s.cfg->fence_max_ms / 1000.0);
	}
	/* Progress goes to stderr: the plan must be out before it. */
	fflush(stdout);
	if (ask.sent) { /* let go while the primary works, not after */
		json_object_put(plan);
		plan = NULL;
	}
	if (!yes) {
		if (!isatty(STDIN_FILENO)) {
			resyncctl_errorf("no terminal to confirm on: pass --yes to erase and replace the data "
			       "on these secondaries; nothing was changed");
			goto out;
		}
		if (!resyncctl_confirm(s.cfg->name)) {
			resyncctl_errorf("not confirmed; nothing was changed");
			goto out;
		}
	}

	if (!ask.sent && !resync_send(&ask, resyncctl_jstr(plan, "plan_token")))
		goto out;
	res = resyncctl_result(&s, resync_progress, &pc);
	if (!res || !resyncctl_result_ok(res))
		goto out;
	nodes = resyncctl_jnodes(res);
	{
		json_object *sum = json_object_new_object(), *arr = json_object_new_array();

		json_object_object_add(sum, "type", json_object_new_string("summary"));
		for (size_t i = 0; nodes && i < json_object_array_length(nodes); i++) {
			json_object *n = json_object_array_get_idx(nodes, i), *x = json_object_new_object();
			const char *keys[] = {"bytes_compared", "bytes_read", "bytes_sent",
					      "bytes_written", "round_trips", "exchanges"};
			bool ok = !strcmp(resyncctl_jstr(n, "result"), "resynced") &&
				  !strcmp(resyncctl_jstr(n, "state"), "UpToDate");

			if (!ok)
				all_ok = false;
			json_object_object_add(x, "name", json_object_new_string(resyncctl_jstr(n, "name")));
			json_object_object_add(x, "result", json_object_new_string(resyncctl_jstr(n, "result")));
			json_object_object_add(x, "state", json_object_new_string(resyncctl_jstr(n, "state")));
			for (size_t k = 0; k < ARRAY_SIZE(keys); k++)
				json_object_object_add(x, keys[k], json_object_new_uint64(resyncctl_ju64(n, keys[k])));
			json_object_object_add(x, "seconds", json_object_new_double(resyncctl_jdbl(n, "seconds")));
			if (resyncctl_jstr(n, "error"))
				json_object_object_add(x, "error", json_object_new_string(resyncctl_jstr(n, "error")));
			{
				/* The way and the proof (issue 11), as the daemon said. */
				json_object *v;

				if (json_object_object_get_ex(n, "mode", &v))
					json_object_object_add(x, "mode", json_object_get(v));
				if (json_object_object_get_ex(n, "proof", &v))
					json_object_object_add(x, "proof", json_object_get(v));
				/* Moved and shifted data (issue 12). */
				if (json_object_object_get_ex(n, "delta", &v))
					json_object_object_add(x, "delta", json_object_get(v));
				if (json_object_object_get_ex(n, "bytes_copied", &v))
					json_object_object_add(x, "bytes_copied", json_object_get(v));
				if (json_object_object_get_ex(n, "copies_refused", &v))
					json_object_object_add(x, "copies_refused", json_object_get(v));
				/* What the plan's kept connection and walk served. */
				if (json_object_object_get_ex(n, "plan_connection", &v))
					json_object_object_add(x, "plan_connection", json_object_get(v));
				if (json_object_object_get_ex(n, "plan_walk", &v))
					json_object_object_add(x, "plan_walk", json_object_get(v));
			}
			json_object_array_add(arr, x);
			if (!json) {
				printf("%s: %s (%s): compared %s, sent %s, wrote %s in %.2fs%s%s\n",
				       resyncctl_jstr(n, "name"), resyncctl_jstr(n, "result"), resyncctl_jstr(n, "state"),
				       format_bytes(resyncctl_ju64(n, "bytes_compared"), b, sizeof(b)),
				       format_bytes(resyncctl_ju64(n, "bytes_sent"), c2, sizeof(c2)),
				       format_bytes(resyncctl_ju64(n, "bytes_written"), w, sizeof(w)),
				       resyncctl_jdbl(n, "seconds"), resyncctl_jstr(n, "error") ? ": " : "",
				       resyncctl_jstr(n, "error") ? resyncctl_jstr(n, "error") : "");
				if (resyncctl_ju64(n, "bytes_copied"))
					printf("  copied %s where it already held the data (moved or shifted)\n",
					       format_bytes(resyncctl_ju64(n, "bytes_copied"), w, sizeof(w)));
				json_object *pr = json_object_object_get(n, "proof");

				if (pr && resyncctl_jstr(pr, "root"))
					printf("  proof: %s (%s)\n", resyncctl_jstr(pr, "root"),
					       json_object_get_boolean(json_object_object_get(pr, "match"))
						       ? "equal to the primary's"
						       : "MISMATCH: not the primary's");
			}
		}
		json_object_object_add(sum, "nodes", arr);
		json_object_object_add(sum, "ok", json_object_new_boolean(all_ok));
		{
			/* The primary's fence and the passes (the daemon's words). */
			static const char *const fk[] = {"fence", "passes", "bytes_per_pass",
							 "passes_stopped", "primary_fence_seconds",
							 "primary_committed", "proof", "proof_error"};
			json_object *v, *bpp = NULL;

			for (size_t k = 0; k < ARRAY_SIZE(fk); k++)
				if (json_object_object_get_ex(res, fk[k], &v))
					json_object_object_add(sum, fk[k], json_object_get(v));
			json_object_object_get_ex(res, "bytes_per_pass", &bpp);
			if (!json && resyncctl_jstr(res, "fence")) {
				printf("primary: %s fence, writes waited %.3f s; %d passes (",
				       resyncctl_jstr(res, "fence"), resyncctl_jdbl(res, "primary_fence_seconds"),
				       json_object_get_int(json_object_object_get(res, "passes")));
				for (size_t k = 0; bpp && k < json_object_array_length(bpp); k++)
					printf("%s%s", k ? ", " : "",
					       format_bytes(json_object_get_uint64(json_object_array_get_idx(bpp, k)),
							    b, sizeof(b)));
				printf("), stopped: %s%s\n", resyncctl_jstr(res, "passes_stopped"),
				       json_object_get_boolean(json_object_object_get(res, "primary_committed"))
					       ? ""
					       : "; the primary kept its bitmap and generation");
			}
		}
		if (json)
			resyncctl_print_json(sum);
		json_object_put(sum);
	}
	rc = all_ok ? 0 : unreachable ? RESYNCCTL_EXIT_UNREACHABLE : 1;
out:
	json_object_put(res);
	json_object_put(plan);
	json_object_put(names);
	json_object_put(force);
	resyncctl_session_close(&s);
	return rc;
}

/* ---- cancel ---- */

static const char cancel_usage[] =
	"usage: resyncctl [--config FILE] [--node NAME] cancel [--json]\n"
	"Stop a running resync at a checkpoint; its secondaries stay Inconsistent\n"
	"until a later resync completes.\n";

int resyncctl_cancel(int argc, char **argv)
{
	struct resyncctl_session s = {0};
	json_object *req, *res;
	bool json = false;
	int rc = 1;

	if (resyncctl_parse_opts(argc, argv, cancel_usage, &json, 0) < 0)
		return EXIT_USAGE;
	rc = resyncctl_session_open(&s);
	if (rc)
		goto out;
	rc = 1;
	req = json_object_new_object();
	json_object_object_add(req, "cmd", json_object_new_string("cancel"));
	res = resyncctl_request(&s, req, NULL, NULL);
	json_object_put(req);
	if (!res || !resyncctl_result_ok(res)) {
		json_object_put(res);
		goto out;
	}
	if (json) {
		resyncctl_print_result(res);
	} else {
		puts(json_object_get_boolean(json_object_object_get(res, "cancelled"))
			     ? "the running resync was asked to stop"
			     : "no resync was running");
	}
	json_object_put(res);
	rc = 0;
out:
	resyncctl_session_close(&s);
	return rc;
}

/* Leading options before the command: --config FILE, --node NAME (also
 * --opt=value). Returns how many argv entries were used, or -1. */
int resyncctl_global_opts(int argc, char **argv)
{
	int i = 1;

	while (i < argc) {
		const char *a = argv[i];

		if (!strncmp(a, "--config=", 9)) {
			resyncctl_config = a + 9;
			i++;
		} else if (!strncmp(a, "--node=", 7)) {
			resyncctl_node = a + 7;
			i++;
		} else if ((!strcmp(a, "--config") || !strcmp(a, "--node")) && i + 1 < argc) {
			if (a[2] == 'c')
				resyncctl_config = argv[i + 1];
			else
				resyncctl_node = argv[i + 1];
			i += 2;
		} else if (!strcmp(a, "--config") || !strcmp(a, "--node")) {
			return -1;
		} else {
			break;
		}
	}
	return i - 1;
}
