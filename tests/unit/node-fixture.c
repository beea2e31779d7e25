#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <cmocka.h>

#include "node-fixture.h"
#include "testlib.h"

char *tcluster_image(const struct tcluster *tc, const char *name)
{
	char *p;

	assert_true(asprintf(&p, "%s/%s.img", tc->dir, name) > 0);
	return p;
}

void tcluster_init(struct tcluster *tc, size_t size, uint64_t seed)
{
	static const char *const names[] = {"p", "s", "t"};
	unsigned char *data = malloc(size ? size : 1);
	char err[512], *text;

	assert_non_null(data);
	assert_int_equal(testlib_tmpdir_new(&tc->dir), 0);
	assert_true(asprintf(&text,
			     "[cluster]\n"
			     "name = demo\n"
			     "primary = p\n"
			     "insecure = true\n"
			     "block_size = 64K\n"
			     "[node p]\naddress = 127.0.0.1:7901\nvolume = %s/p.img\n"
			     "[node s]\naddress = 127.0.0.1:7902\nvolume = %s/s.img\n"
			     "[node t]\naddress = 127.0.0.1:7903\nvolume = %s/t.img\n",
			     tc->dir, tc->dir, tc->dir) > 0);
	assert_int_equal(cluster_config_parse("test.conf", text, err, sizeof(err), &tc->cfg), 0);
	free(text);
	testlib_fill(data, size, seed);
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		char *img = tcluster_image(tc, names[i]);

		assert_int_equal(testlib_file_write(img, data, size), 0);
		free(img);
	}
	free(data);
}

void tcluster_release(struct tcluster *tc)
{
	cluster_config_free(tc->cfg);
	testlib_tmpdir_remove(tc->dir);
	free(tc->dir);
	memset(tc, 0, sizeof(*tc));
}

struct node *tnode_new(const struct tcluster *tc, const char *name)
{
	struct meta_opts mo = {.block_size = tc->cfg->block_size};
	struct node *n = calloc(1, sizeof(*n));

	assert_non_null(n);
	pthread_mutex_init(&n->lock, NULL);
	pthread_mutex_init(&n->sessions_lock, NULL);
	pthread_mutex_init(&n->proof_lock, NULL);
	pthread_cond_init(&n->sessions_cond, NULL);
	n->cfg = tc->cfg;
	n->self = cluster_config_node(tc->cfg, name);
	assert_non_null(n->self);
	n->is_primary = tc->cfg->primary && !strcmp(tc->cfg->primary, name);
	assert_true(asprintf(&n->state_path, "%s.resync-node", n->self->volume) > 0);
	assert_int_equal(volume_open(n->self->volume, VOLUME_WRITE | VOLUME_LOCK, &n->vol), 0);
	assert_int_equal(meta_open(n->vol, NULL, META_CREATE, &mo, &n->meta), 0);
	assert_int_equal(event_bus_new(tc->cfg->name, &n->bus), 0);
	return n;
}

void tnode_free(struct node *n)
{
	struct volume *v;
	struct meta *m;

	if (!n)
		return;
	v = n->vol;
	m = n->meta;
	node_free(n);
	meta_free(m);
	volume_free(v);
}

struct session *tsession_start(struct node *n, struct peer_conn **ret_peer)
{
	struct session *s = calloc(1, sizeof(*s));
	struct peer_conn *mine = NULL;
	int sv[2];

	assert_non_null(s);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	assert_int_equal(peer_conn_new_plain(sv[0], "the asking side", &mine), 0);
	assert_int_equal(peer_conn_new_plain(sv[1], "the session", ret_peer), 0);
	s->n = n;
	s->c = mine;
	s->unauth = true;
	/* As node_session_start(): listed before the thread can end. */
	pthread_mutex_lock(&n->sessions_lock);
	assert_int_equal(pthread_create(&s->thread, NULL, session_thread, s), 0);
	s->next = n->sessions;
	n->sessions = s;
	n->sessions_unauth++;
	pthread_mutex_unlock(&n->sessions_lock);
	return s;
}

void tsession_join(struct node *n, struct session *s)
{
	struct session **pp;

	assert_int_equal(pthread_join(s->thread, NULL), 0);
	pthread_mutex_lock(&n->sessions_lock);
	for (pp = &n->sessions_ended; *pp && *pp != s; pp = &(*pp)->next)
		;
	assert_ptr_equal(*pp, s); /* the thread moved itself there */
	*pp = s->next;
	assert_int_equal(n->sessions_unauth, 0);
	pthread_mutex_unlock(&n->sessions_lock);
	assert_null(s->c);
	free(s);
}
