/* The primary's job toward one secondary (daemon/job.c), step by step,
 * against a real session (daemon/session.c) serving the secondary's
 * image on the other end of a socketpair; no FUSE, no TLS. The job's
 * context is the primary's node (node-fixture.c), its hello made by
 * node_hello_make() as resync.c's job_open_thread() sends it. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "job-early.h"
#include "job-hashif.h"
#include "job-walk.h"
#include "moved-int.h"
#include "node-fixture.h"
#include "resync/blockcmp.h"
#include "resync/io.h"
#include "resync/macro.h"
#include "testlib.h"

/* 64 blocks and a short one; a page is the tree's leaf. */
#define SIZE ((size_t)(4 << 20) + 1000)
#define SEED 11
#define DEADLINE_USEC (10 * 1000000ull)

struct fx {
	struct tcluster tc;
	struct node *p, *s;
	unsigned char *base; /* every image as tcluster_init() wrote it */
	unsigned char *pdata, *sdata; /* the primary's and the secondary's */
	struct meta_uuid gen;	      /* the primary's */

	struct job_ctx ctx;
	struct ratectl rate;
	atomic_bool cancel;
	pthread_mutex_t cli_lock;

	struct session *sess;
	struct job j;
	struct hash128 *hashes;
	struct hashtree *tree;
};

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	tcluster_init(&f->tc, SIZE, SEED);
	f->base = malloc(SIZE);
	f->pdata = malloc(SIZE);
	f->sdata = malloc(SIZE);
	assert_non_null(f->base);
	assert_non_null(f->pdata);
	assert_non_null(f->sdata);
	testlib_fill(f->base, SIZE, SEED);
	memcpy(f->pdata, f->base, SIZE);
	memcpy(f->sdata, f->base, SIZE);
	pthread_mutex_init(&f->cli_lock, NULL);
	*state = f;
	return 0;
}

static void job_end(struct fx *f)
{
	struct job *j = &f->j;

	peer_conn_free(j->c);
	if (f->sess)
		tsession_join(f->s, f->sess);
	f->sess = NULL;
	free(j->buf);
	rangelist_release(&j->ranges);
	moved_free(j); /* as resync.c does: a compare noted the secondary's leaves */
	memset(j, 0, sizeof(*j));
	hashtree_free(f->tree);
	free(f->hashes);
	f->tree = NULL;
	f->hashes = NULL;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	job_end(f);
	tnode_free(f->p);
	tnode_free(f->s);
	tcluster_release(&f->tc);
	pthread_mutex_destroy(&f->cli_lock);
	free(f->base);
	free(f->pdata);
	free(f->sdata);
	free(f);
	return 0;
}

/* Write the images as pdata and sdata say, then open both nodes: the
 * primary at a generation of its own, UpToDate (as node_new() leaves
 * it), the secondary Outdated. */
static void fx_open(struct fx *f);

static void fx_nodes(struct fx *f)
{
	char *pi = tcluster_image(&f->tc, "p"), *si = tcluster_image(&f->tc, "s");

	assert_int_equal(testlib_file_write(pi, f->pdata, SIZE), 0);
	assert_int_equal(testlib_file_write(si, f->sdata, SIZE), 0);
	free(pi);
	free(si);
	fx_open(f);
}

/* Both nodes opened on the images as they are. */
static void fx_open(struct fx *f)
{
	f->p = tnode_new(&f->tc, "p");
	f->s = tnode_new(&f->tc, "s");
	assert_true(f->p->is_primary);
	assert_int_equal(meta_uuid_random(&f->gen), 0);
	assert_int_equal(meta_generation_set(f->p->meta, &f->gen), 0);
	assert_int_equal(meta_state_set(f->p->meta, META_STATE_UPTODATE), 0);
	assert_int_equal(meta_state_set(f->s->meta, META_STATE_OUTDATED), 0);
	f->ctx = (struct job_ctx){f->tc.cfg, f->p->vol, f->p->bus, &f->rate, &f->cancel, NULL, NULL};
	ratectl_reset(&f->rate, 0);
	atomic_store(&f->cancel, false);
}

/* Change bytes [off, off+len) of buf to seed's stream. */
static void change(unsigned char *buf, size_t off, size_t len, uint64_t seed)
{
	testlib_scribble(buf, off, len, seed);
}

/* A job toward s, opened as job_open_thread() does it (the primary's
 * hello, the secondary's HELLO_ACK checked) over a new session; a full
 * compare with page leaves. */
static struct job *job_open(struct fx *f, bool write)
{
	struct job *j = &f->j;
	struct wire_hello mine;
	struct wire_text why;
	uint16_t type;
	size_t len;

	job_end(f);
	f->sess = tsession_start(f->s, &j->c);
	j->ctx = &f->ctx;
	j->peer = cluster_config_node(f->tc.cfg, "s");
	j->cli = NULL;
	j->cli_lock = &f->cli_lock;
	j->write = write;
	j->gen = f->gen;
	j->bitmap_size = DIV_ROUND_UP(DIV_ROUND_UP(SIZE, TN_BLOCK), 8);
	j->buf = malloc(RESYNC_WIRE_FRAME_MAX);
	assert_non_null(j->buf);
	node_hello_make(f->p, &mine);
	assert_true(mine.flags & WIRE_HELLO_PRIMARY);
	if (write)
		mine.features |= WIRE_FEATURE_GROW;
	assert_int_equal(wire_hello_encode(&mine, j->buf, RESYNC_WIRE_FRAME_MAX, &len), 0);
	assert_int_equal(peer_conn_send_frame(j->c, WIRE_HELLO, j->buf, len), 0);
	assert_int_equal(peer_conn_recv_frame(j->c, &type, j->buf, RESYNC_WIRE_FRAME_MAX, &len), 0);
	assert_int_equal(type, WIRE_HELLO_ACK);
	assert_int_equal(wire_hello_decode(j->buf, len, &j->hello), 0);
	assert_int_equal(node_hello_check(f->p, &j->hello, &why), 0);
	j->features = j->hello.features & node_features();
	j->opened = true;
	j->mode = JOB_FULL;
	j->leaf = wire_tree_leaf(SIZE, TN_BLOCK);
	j->fanout = NODE_FINE_FANOUT;
	assert_int_equal(j->leaf, RESYNC_PAGE);
	assert_true(j->features & WIRE_FEATURE_FINE_LEAVES);
	return j;
}

/* The primary's tree for seed, as resync.c's resync_hash() builds it. */
static void job_tree(struct fx *f, uint64_t seed)
{
	struct job *j = &f->j;
	struct blockcmp_opts o = {.block_size = j->leaf, .seed = seed};
	uint64_t size = volume_size(f->p->vol), nl = DIV_ROUND_UP(size, j->leaf);

	f->hashes = calloc(nl, sizeof(*f->hashes));
	assert_non_null(f->hashes);
	assert_int_equal(blockcmp_hash_volume(f->p->vol, 0, size, &o, f->hashes), 0);
	assert_int_equal(hashtree_new(f->hashes, nl, j->fanout, seed, &f->tree), 0);
	j->tree = f->tree;
	j->seed = seed;
}

static enum meta_state state_of(struct node *n)
{
	struct meta_info mi;

	assert_int_equal(meta_info_get(n->meta, &mi), 0);
	return mi.state;
}

static void assert_image(struct fx *f, const char *name, const unsigned char *want)
{
	char *img = tcluster_image(&f->tc, name);

	assert_int_equal(testlib_file_equals(img, want, SIZE), 1);
	free(img);
}

/* The pages changed on the primary: one page, two adjacent pages, ten
 * bytes inside a page, the volume's short last page. */
static const struct range changed[] = {
	{3 * RESYNC_PAGE, RESYNC_PAGE},
	{100 * RESYNC_PAGE, 2 * RESYNC_PAGE},
	{500000 / RESYNC_PAGE * RESYNC_PAGE, RESYNC_PAGE},
	{4 << 20, 1000},
};
#define CHANGED_BYTES (4096 + 8192 + 4096 + 1000)

static void change_primary(struct fx *f)
{
	change(f->pdata, 3 * RESYNC_PAGE, 1, 1);
	change(f->pdata, 100 * RESYNC_PAGE + 4000, 200, 2); /* across two pages */
	change(f->pdata, 500000, 10, 3);
	change(f->pdata, SIZE - 10, 10, 4);
}

/* job_compare finds exactly the changed pages; job_transfer makes the
 * secondary's image the primary's, writing the changed bytes only, and
 * commits it at the primary's generation; a compare after it finds
 * nothing. */
static void test_compare_transfer(void **state)
{
	struct fx *f = *state;
	struct job *j;
	struct meta_info mi;

	change_primary(f);
	fx_nodes(f);

	j = job_open(f, true);
	job_tree(f, 0x1234);
	job_prefetch(j, j->seed); /* the peer builds its tree now */
	assert_true(j->prefetched);
	assert_int_equal(job_compare(j, j->c, j->buf), 0);
	assert_false(j->prefetched);
	assert_int_equal(j->ranges.n, ARRAY_SIZE(changed));
	for (size_t i = 0; i < ARRAY_SIZE(changed); i++) {
		assert_int_equal(j->ranges.v[i].off, changed[i].off);
		assert_int_equal(j->ranges.v[i].len, changed[i].len);
	}
	assert_int_equal(j->differing_bytes, CHANGED_BYTES);
	assert_int_equal(j->differing_blocks, 4); /* blocks 0, 6, 7 and 64 */
	assert_int_equal(j->bytes_compared, SIZE);
	/* A compare writes nothing. */
	assert_image(f, "s", f->sdata);
	assert_int_equal(state_of(f->s), META_STATE_OUTDATED);

	assert_int_equal(job_transfer(j, j->c, j->buf), 0);
	assert_int_equal(j->bytes_written, CHANGED_BYTES);
	assert_true(j->bytes_read >= CHANGED_BYTES);
	assert_true(peer_conn_bytes_sent(j->c) > 0);
	assert_false(j->ack_pending);
	/* The commit's ACK came back: the secondary holds it already. */
	assert_int_equal(meta_info_get(f->s->meta, &mi), 0);
	assert_int_equal(mi.state, META_STATE_UPTODATE);
	assert_memory_equal(mi.generation.b, f->gen.b, 16);
	assert_int_equal(meta_dirty_bytes(f->s->meta), 0);
	job_end(f);
	assert_image(f, "s", f->pdata);

	/* Compared again, with another seed: nothing differs. */
	j = job_open(f, false);
	job_tree(f, 0x5678);
	assert_int_equal(job_compare(j, j->c, j->buf), 0);
	assert_int_equal(j->ranges.n, 0);
	assert_int_equal(j->differing_bytes, 0);
}

/* A cancel before the transfer: -ECANCELED, said to the secondary,
 * nothing written, its state unchanged. */
static void test_cancel_before(void **state)
{
	struct fx *f = *state;
	struct job *j;

	change_primary(f);
	fx_nodes(f);
	j = job_open(f, true);
	job_tree(f, 99);
	assert_int_equal(job_compare(j, j->c, j->buf), 0);
	assert_int_equal(j->differing_bytes, CHANGED_BYTES);
	atomic_store(&f->cancel, true);
	assert_int_equal(job_transfer(j, j->c, j->buf), -ECANCELED);
	assert_string_equal(j->err, "cancelled");
	assert_int_equal(j->bytes_written, 0);
	/* The session ended at the job's ERROR; joined here. */
	job_end(f);
	assert_int_equal(state_of(f->s), META_STATE_OUTDATED);
	assert_image(f, "s", f->sdata);
}

struct xfer_thread {
	struct job *j;
	int r;
};

static void *xfer_main(void *arg)
{
	struct xfer_thread *x = arg;

	x->r = job_transfer(x->j, x->j->c, x->j->buf);
	return NULL;
}

static bool is_inconsistent(void *arg)
{
	return state_of(arg) == META_STATE_INCONSISTENT;
}

/* A transfer on its own thread (x, t), BLOCKS one piece each (extents
 * are not offered), paused (ratectl) after its first frame until the
 * cancel; with refuse, the secondary acts as primary from its first
 * frame on (etcd moved the leader to it). */
static struct job *job_xfer_paused(struct fx *f, struct xfer_thread *x, pthread_t *t, bool refuse)
{
	struct job *j;

	change_primary(f);
	fx_nodes(f);
	j = job_open(f, true);
	j->features &= ~(uint64_t)WIRE_FEATURE_EXTENTS;
	job_tree(f, 7);
	assert_int_equal(job_compare(j, j->c, j->buf), 0);
	ratectl_set_paused(&f->rate, true);
	if (refuse)
		atomic_store(&f->s->is_primary, true);
	x->j = j;
	assert_int_equal(pthread_create(t, NULL, xfer_main, x), 0);
	return j;
}

/* The cancel, and the transfer's end with it. */
static void job_xfer_cancel(struct fx *f, struct xfer_thread *x, pthread_t t)
{
	atomic_store(&f->cancel, true);
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_int_equal(x->r, -ECANCELED);
}

/* A cancel once something was written: the secondary stays
 * Inconsistent, with the first range written and the rest not. */
static void test_cancel_during(void **state)
{
	struct fx *f = *state;
	struct xfer_thread x = {0};
	unsigned char *want = malloc(SIZE);
	pthread_t t;
	struct job *j;

	assert_non_null(want);
	j = job_xfer_paused(f, &x, &t, false);
	assert_int_equal(testlib_wait_until(is_inconsistent, f->s, DEADLINE_USEC), 0);
	job_xfer_cancel(f, &x, t);
	assert_int_equal(j->bytes_written, changed[0].len);
	job_end(f);
	assert_int_equal(state_of(f->s), META_STATE_INCONSISTENT);
	memcpy(want, f->sdata, SIZE);
	memcpy(want + changed[0].off, f->pdata + changed[0].off, changed[0].len);
	assert_image(f, "s", want);
	free(want);
}

static bool job_heard_back(void *arg)
{
	return peer_conn_readable(arg);
}

/* A cancel after a frame that the secondary refused (it acts as primary
 * now: etcd moved the leader, and this node saw it too and cancelled):
 * its ERROR, read after the cancel, says its state, which the job takes
 * over the Inconsistent that the bytes sent would suggest. Nothing was
 * written there. */
static void test_cancel_refused(void **state)
{
	struct fx *f = *state;
	struct xfer_thread x = {0};
	pthread_t t;
	struct job *j;

	j = job_xfer_paused(f, &x, &t, true);
	/* The secondary's refusal waits in the socket, unread, when the
	 * cancel comes. */
	assert_int_equal(testlib_wait_until(job_heard_back, j->c, DEADLINE_USEC), 0);
	job_xfer_cancel(f, &x, t);
	assert_true(j->bytes_written > 0);
	assert_non_null(strstr(j->err, "this node acts as primary now: refused the writes"));
	/* What it said of itself (its state unchanged), not the guess
	 * from the bytes sent. */
	assert_true(j->err_state_said);
	assert_int_equal(j->err_state, META_STATE_OUTDATED);
	job_end(f);
	assert_int_equal(state_of(f->s), META_STATE_OUTDATED);
	assert_image(f, "s", f->sdata);
}

/* job_quick: the union of both dirty bitmaps, whole blocks; its
 * transfer sends only the pages of those blocks that differ (PAGE_REQ),
 * and leaves the secondary the primary's image. */
static void test_quick(void **state)
{
	struct fx *f = *state;
	unsigned char *pbm;
	size_t bms = DIV_ROUND_UP(DIV_ROUND_UP(SIZE, TN_BLOCK), 8);
	uint64_t last = SIZE / TN_BLOCK; /* the short block */
	struct job *j;

	/* The primary wrote a page of block 2 and the short block; the
	 * secondary a page of block 5 and, with the same bytes, block 9. */
	change(f->pdata, 2 * TN_BLOCK + 3 * RESYNC_PAGE, 100, 5);
	change(f->pdata, SIZE - 1, 1, 6);
	change(f->sdata, 5 * TN_BLOCK + 2 * RESYNC_PAGE + 7, 1, 7);
	fx_nodes(f);
	assert_int_equal(meta_dirty_mark(f->p->meta, 2 * TN_BLOCK, 1), 0);
	assert_int_equal(meta_dirty_mark(f->p->meta, SIZE - 1, 1), 0);
	assert_int_equal(meta_dirty_mark(f->s->meta, 5 * TN_BLOCK, 1), 0);
	assert_int_equal(meta_dirty_mark(f->s->meta, 9 * TN_BLOCK, TN_BLOCK), 0);
	pbm = calloc(1, bms);
	assert_non_null(pbm);
	assert_int_equal(meta_bitmap_read(f->p->meta, pbm, bms), (long long)bms);

	j = job_open(f, true);
	j->mode = JOB_QUICK;
	j->pbitmap = pbm;
	assert_int_equal(job_quick(j), 0);
	assert_int_equal(j->ranges.n, 4);
	assert_int_equal(j->ranges.v[0].off, 2 * TN_BLOCK);
	assert_int_equal(j->ranges.v[0].len, TN_BLOCK);
	assert_int_equal(j->ranges.v[1].off, 5 * TN_BLOCK);
	assert_int_equal(j->ranges.v[2].off, 9 * TN_BLOCK);
	assert_int_equal(j->ranges.v[3].off, last * TN_BLOCK);
	assert_int_equal(j->ranges.v[3].len, SIZE - last * TN_BLOCK);
	assert_int_equal(j->differing_blocks, 4);
	assert_int_equal(j->differing_bytes, 3 * TN_BLOCK + SIZE - last * TN_BLOCK);

	j->seed = 42;
	assert_int_equal(job_transfer(j, j->c, j->buf), 0);
	/* Three pages differ: one each in blocks 2 and 5, and the short
	 * last page (1000 bytes). */
	assert_int_equal(j->bytes_written, 2 * RESYNC_PAGE + 1000);
	job_end(f);
	assert_image(f, "s", f->pdata);
	assert_int_equal(state_of(f->s), META_STATE_UPTODATE);
	assert_int_equal(meta_dirty_bytes(f->s->meta), 0);
	free(pbm);
}

/* A pass of job_send_ranges() (batched extents: its few KiB go in the
 * frame flushed after the last batch) is paced by max_rate: at 16 KiB/s
 * its CHANGED_BYTES take about a second, not the instant they did when
 * the pass's last frame was not counted. */
static void test_pass_paced(void **state)
{
	struct fx *f = *state;
	const uint64_t rate = 16 << 10;
	uint64_t t0, usec;
	struct job *j;

	change_primary(f);
	fx_nodes(f);
	j = job_open(f, true);
	assert_true(j->features & WIRE_FEATURE_EXTENTS);
	job_tree(f, 3);
	assert_int_equal(job_compare(j, j->c, j->buf), 0);
	assert_int_equal(j->differing_bytes, CHANGED_BYTES);
	ratectl_reset(&f->rate, rate);
	assert_int_equal(job_xfer_open(j), 0);
	t0 = clock_usec();
	assert_int_equal(job_send_ranges(j, &j->ranges, JOB_SEND_CHECKPOINTS | JOB_SEND_SETTLE), 0);
	usec = clock_usec() - t0;
	assert_int_equal(j->bytes_written, CHANGED_BYTES);
	assert_true(usec >= CHANGED_BYTES * 1000000ull / rate * 9 / 10);
	job_xfer_close(j);
	job_end(f);
}

/* HELLO again on the session (WIRE_FEATURE_REHELLO), as a resync does
 * on the connection its plan kept: answered with a HELLO_ACK. */
static void job_rehello(struct fx *f)
{
	struct job *j = &f->j;
	struct wire_hello mine;
	uint16_t type;
	size_t len;

	assert_true(j->features & WIRE_FEATURE_REHELLO);
	node_hello_make(f->p, &mine);
	assert_int_equal(wire_hello_encode(&mine, j->buf, RESYNC_WIRE_FRAME_MAX, &len), 0);
	assert_int_equal(peer_conn_send_frame(j->c, WIRE_HELLO, j->buf, len), 0);
	assert_int_equal(peer_conn_recv_frame(j->c, &type, j->buf, RESYNC_WIRE_FRAME_MAX, &len), 0);
	assert_int_equal(type, WIRE_HELLO_ACK);
	rangelist_release(&j->ranges);
	j->differing_bytes = 0;
}

/* A plan's walk memo (job-walk.c): the resync's walk on the same session
 * after a HELLO again ends at the first level with the plan's leaves
 * while the secondary is unchanged; once the secondary's image is
 * written, the memo does not serve and the walk finds the write. */
static void test_walk_memo(void **state)
{
	struct fx *f = *state;
	struct walk_memo m;
	struct job *j;
	unsigned char page[RESYNC_PAGE];

	change_primary(f);
	fx_nodes(f);
	j = job_open(f, false);
	job_tree(f, 0x5eed);
	j->memo_make = true;
	job_prefetch(j, j->seed);
	assert_int_equal(job_compare(j, j->c, j->buf), 0);
	assert_true(j->memo.set);
	assert_false(j->memo_used);
	assert_int_equal(j->memo.nleaves_diff, 5); /* pages 3, 100, 101, 122 and the last */
	assert_int_equal(j->ranges.n, ARRAY_SIZE(changed));
	m = j->memo;
	memset(&j->memo, 0, sizeof(j->memo));
	j->memo_make = false;

	/* Unchanged: the plan's answer. */
	job_rehello(f);
	j->memo_in = &m;
	job_prefetch(j, j->seed);
	assert_int_equal(job_compare(j, j->c, j->buf), 0);
	assert_true(j->memo_used);
	assert_int_equal(j->ranges.n, ARRAY_SIZE(changed));
	for (size_t i = 0; i < ARRAY_SIZE(changed); i++) {
		assert_int_equal(j->ranges.v[i].off, changed[i].off);
		assert_int_equal(j->ranges.v[i].len, changed[i].len);
	}
	assert_int_equal(j->differing_bytes, CHANGED_BYTES);

	/* The secondary written since: walked again, the write found. */
	memset(page, 0xa5, sizeof(page));
	assert_int_equal(fd_pwrite_full(volume_fd(f->s->vol), page, sizeof(page), 200 * RESYNC_PAGE), 0);
	job_rehello(f);
	j->memo_used = false;
	job_prefetch(j, j->seed);
	assert_int_equal(job_compare(j, j->c, j->buf), 0);
	assert_false(j->memo_used);
	assert_int_equal(j->ranges.n, ARRAY_SIZE(changed) + 1);
	assert_int_equal(j->ranges.v[3].off, 200 * RESYNC_PAGE); /* after page 122 */
	assert_int_equal(j->differing_bytes, CHANGED_BYTES + RESYNC_PAGE);
	j->memo_in = NULL;
	walk_memo_release(&m);
	job_end(f);
}

/* A peer that answers the first frame it receives with one made by the
 * test (job-walk.c's checks of what a secondary sends). */
struct fake_peer {
	struct peer_conn *c;
	uint16_t type;
	unsigned char *payload;
	size_t len;
	uint16_t got; /* the type it received */
};

static void *fake_peer_run(void *arg)
{
	struct fake_peer *fp = arg;
	unsigned char *in = malloc(RESYNC_WIRE_FRAME_MAX);
	size_t len;

	if (in && peer_conn_recv_frame(fp->c, &fp->got, in, RESYNC_WIRE_FRAME_MAX, &len) == 0)
		(void)peer_conn_send_frame(fp->c, fp->type, fp->payload, fp->len);
	free(in);
	return NULL;
}

/* The walk against a peer that answers its first request with
 * (type, payload): its result. */
static int walk_against(struct fx *f, uint16_t type, const void *payload, size_t len)
{
	struct job *j = &f->j;
	struct fake_peer fp = {.type = type, .len = len};
	uint64_t *leaves = NULL;
	pthread_t t;
	size_t nl = 0;
	int sv[2], r;

	fp.payload = malloc(len ? len : 1);
	assert_non_null(fp.payload);
	memcpy(fp.payload, payload, len);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	assert_int_equal(peer_conn_new_plain(sv[0], "the primary", &j->c), 0);
	assert_int_equal(peer_conn_new_plain(sv[1], "a broken secondary", &fp.c), 0);
	assert_int_equal(pthread_create(&t, NULL, fake_peer_run, &fp), 0);
	r = job_walk(j, j->c, j->buf, &leaves, &nl);
	pthread_join(t, NULL);
	assert_int_equal(fp.got, WIRE_HASH_REQ);
	assert_null(leaves);
	assert_int_equal(nl, 0);
	peer_conn_free(fp.c);
	peer_conn_free(j->c);
	j->c = NULL;
	free(fp.payload);
	return r;
}

/* What a secondary answers to the walk is checked: too few hashes,
 * another level, another frame type, an ERROR (its text kept). */
static void test_walk_bad_replies(void **state)
{
	struct fx *f = *state;
	struct job *j = &f->j;
	uint64_t nl = DIV_ROUND_UP(SIZE, RESYNC_PAGE);
	struct hash128 *h = calloc(nl, sizeof(*h));
	unsigned char *p = malloc(RESYNC_WIRE_FRAME_MAX);
	size_t len;

	assert_non_null(h);
	assert_non_null(p);
	fx_nodes(f);
	j->ctx = &f->ctx;
	j->peer = cluster_config_node(f->tc.cfg, "s");
	j->buf = malloc(RESYNC_WIRE_FRAME_MAX);
	assert_non_null(j->buf);
	j->leaf = RESYNC_PAGE;
	j->fanout = NODE_FINE_FANOUT;
	job_tree(f, 77);
	/* Small: the first level asked for is the leaves, all nl of them. */
	assert_true(nl <= 4096);
	assert_int_equal(wire_hash_reply_encode(0, h, nl - 1, p, RESYNC_WIRE_FRAME_MAX, &len), 0);
	assert_int_equal(walk_against(f, WIRE_HASH_REPLY, p, len), -EBADMSG);
	assert_int_equal(wire_hash_reply_encode(1, h, nl, p, RESYNC_WIRE_FRAME_MAX, &len), 0);
	assert_int_equal(walk_against(f, WIRE_HASH_REPLY, p, len), -EBADMSG);
	assert_int_equal(walk_against(f, WIRE_PAGE_REPLY, p, len), -EBADMSG);
	{
		struct wire_text t = {.code = WIRE_REASON_OTHER};

		snprintf(t.text, sizeof(t.text), "disk on fire");
		assert_int_equal(wire_text_encode(&t, p, RESYNC_WIRE_FRAME_MAX, &len), 0);
	}
	assert_int_equal(walk_against(f, WIRE_ERROR, p, len), -EIO);
	assert_non_null(strstr(j->err, "disk on fire"));
	free(h);
	free(p);
}

/* The walk's first level (job-walk.c): the floor's on a link under 5 ms
 * or unmeasured; over 50 ms, level 1 whole at 512 MiB and 2 GiB of page
 * leaves (fanout 16), never more than one request; the plan's memo's
 * level when the memo has the tree's shape; chosen once. */
static void test_walk_first_level(void **state)
{
	struct fx *f = *state;
	struct job *j = &f->j;
	struct walk_memo m = {.set = true, .nleaves = 131072, .fanout = 16, .first_level = 0};
	const uint64_t l512 = (512ull << 20) / RESYNC_PAGE, l2g = (2048ull << 20) / RESYNC_PAGE;
	struct peer_conn *c;
	unsigned level;
	uint64_t count;
	int sv[2];

	assert_int_equal(job_walk_first_nodes(0, 8), 4096);
	assert_int_equal(job_walk_first_nodes(4999, 8), 4096); /* loopback, a LAN */
	assert_int_equal(job_walk_first_nodes(4999, 1), 4096);
	assert_int_equal(job_walk_first_nodes(5000, 8), 32768); /* 5 ms at 100 MiB/s: 512 KiB */
	/* 50 ms: 5 MiB of hashes, several requests; one for a peer that
	 * takes one only (no WIRE_FEATURE_HASH_MORE, job-hashif.c). */
	assert_int_equal(job_walk_first_nodes(50000, 8), 327680);
	assert_int_equal(job_walk_first_nodes(50000, 1), RESYNC_WIRE_HASHES_MAX);
	assert_int_equal(job_walk_first_nodes(50000, 0), RESYNC_WIRE_HASHES_MAX);
	/* The cap: 8 requests, however many are allowed. */
	assert_int_equal(job_walk_first_nodes(UINT64_MAX, 8), 8 * RESYNC_WIRE_HASHES_MAX);
	assert_int_equal(job_walk_first_nodes(UINT64_MAX, 100), 8 * RESYNC_WIRE_HASHES_MAX);
	assert_int_equal(job_walk_first_nodes(UINT64_MAX, 1), RESYNC_WIRE_HASHES_MAX);
	job_walk_first(l512, 16, 4096, &level, &count);
	assert_int_equal(level, 2);
	assert_int_equal(count, 512);
	/* 512 MiB at 50 ms: level 0 whole, 131,072 hashes in 2 requests. */
	job_walk_first(l512, 16, job_walk_first_nodes(50000, 8), &level, &count);
	assert_int_equal(level, 0);
	assert_int_equal(count, 131072);
	assert_int_equal(job_walk_first_parts(count), 2);
	job_walk_first(l512, 16, job_walk_first_nodes(50000, 1), &level, &count);
	assert_int_equal(level, 1);
	assert_int_equal(count, 8192);
	assert_int_equal(job_walk_first_parts(count), 1);
	/* 2 GiB: level 0 (8 MiB) is past 50 ms's budget; within 100 ms's. */
	job_walk_first(l2g, 16, job_walk_first_nodes(50000, 8), &level, &count);
	assert_int_equal(level, 1);
	assert_int_equal(count, 32768);
	job_walk_first(l2g, 16, job_walk_first_nodes(100000, 8), &level, &count);
	assert_int_equal(level, 0);
	assert_int_equal(job_walk_first_parts(count), 8);
	assert_int_equal(job_walk_first_parts(RESYNC_WIRE_HASHES_MAX + 1), 2);
	assert_int_equal(job_walk_first_parts(1), 1);
	job_walk_first(1, 16, 4096, &level, &count);
	assert_int_equal(level, 0);
	assert_int_equal(count, 1);

	/* A job over a connection whose round trip was measured. */
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	assert_int_equal(peer_conn_new_plain(sv[0], "a far secondary", &j->c), 0);
	assert_int_equal(peer_conn_new_plain(sv[1], "the primary", &c), 0);
	assert_int_equal(peer_conn_rtt_usec(j->c), 0);
	peer_conn_note_rtt(j->c, 80000);
	peer_conn_note_rtt(j->c, 50000);
	peer_conn_note_rtt(j->c, 70000);
	assert_int_equal(peer_conn_rtt_usec(j->c), 50000); /* the least */
	job_walk_first_level(j, l512, 16, &level, &count);
	assert_int_equal(level, 0);
	assert_int_equal(count, l512);
	/* A first level of one request (a HASH_REQ_IF to a peer without
	 * WIRE_FEATURE_HASH_MORE): the deepest that fits one. */
	j->first_one = true;
	j->first_fanout = 0;
	job_walk_first_level(j, l512, 16, &level, &count);
	assert_int_equal(level, 1);
	assert_int_equal(count, 8192);
	/* Chosen once: a later sample changes nothing for this tree. */
	peer_conn_note_rtt(j->c, 10);
	job_walk_first_level(j, l512, 16, &level, &count);
	assert_int_equal(level, 1);
	j->first_one = false;
	/* Another tree's shape: chosen again, now at the floor. */
	job_walk_first_level(j, l2g, 16, &level, &count);
	assert_int_equal(level, 2);
	assert_int_equal(count, 2048);
	/* The plan's memo of this shape: its level, whatever the link. */
	j->first_fanout = 0;
	j->memo_in = &m;
	job_walk_first_level(j, l512, 16, &level, &count);
	assert_int_equal(level, 0);
	assert_int_equal(count, l512);
	/* ... and not for another shape (the link's 10 us now: the floor). */
	job_walk_first_level(j, l512, 32, &level, &count);
	assert_int_equal(level, 1);
	assert_int_equal(count, 4096);
	j->memo_in = NULL;
	/* A volume hashed in half the session timeout or less (4 MiB: 40 ms
	 * at 100 MiB/s): the link's level; one that takes longer, the floor
	 * (its reply would wait for the hashing past the socket buffers). */
	fx_nodes(f);
	j->ctx = &f->ctx;
	peer_conn_note_rtt(j->c, 0); /* 0 is noted as 1 us: still the least */
	assert_int_equal(peer_conn_rtt_usec(j->c), 1);
	j->first_fanout = 0;
	job_walk_first_level(j, l512, 16, &level, &count);
	assert_int_equal(level, 2); /* 1 us: the floor */
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	peer_conn_free(j->c);
	peer_conn_free(c);
	assert_int_equal(peer_conn_new_plain(sv[0], "a far secondary", &j->c), 0);
	assert_int_equal(peer_conn_new_plain(sv[1], "the primary", &c), 0);
	peer_conn_note_rtt(j->c, 50000);
	j->first_fanout = 0;
	job_walk_first_level(j, l512, 16, &level, &count);
	assert_int_equal(level, 0); /* 40 ms of hashing, 120 s of timeout */
	f->tc.cfg->session_timeout_ms = 60; /* 40 ms > 30 ms */
	j->first_fanout = 0;
	job_walk_first_level(j, l512, 16, &level, &count);
	assert_int_equal(level, 2);
	f->tc.cfg->session_timeout_ms = CONFIG_SESSION_TIMEOUT_DEFAULT_MS;
	peer_conn_free(c);
}

/* HASH_REQ_IF to a real session: (gen, base) into j->buf, sent. */
static void send_hash_req_if(struct job *j, const struct meta_uuid *gen, const struct meta_uuid *base)
{
	struct hashtree_range first = {0, DIV_ROUND_UP(SIZE, RESYNC_PAGE)};
	struct wire_uuid g, b;
	size_t len;

	memcpy(g.b, gen->b, 16);
	memcpy(b.b, base->b, 16);
	assert_int_equal(wire_hash_req_if_encode(&g, &b, 0x5eed, 0, NODE_FINE_FANOUT, RESYNC_PAGE,
						 &first, 1, j->buf, RESYNC_WIRE_FRAME_MAX, &len), 0);
	assert_int_equal(peer_conn_send_frame(j->c, WIRE_HASH_REQ_IF, j->buf, len), 0);
}

/* Its answer: HASH_IF_ACK, then the HASH_REPLY when answered; a
 * STATUS_REQ's reply right after shows that nothing else came. */
static bool recv_hash_if(struct job *j)
{
	uint16_t type;
	size_t len;
	bool answered = false;
	struct wire_hash_reply rep;

	assert_int_equal(peer_conn_recv_frame(j->c, &type, j->buf, RESYNC_WIRE_FRAME_MAX, &len), 0);
	assert_int_equal(type, WIRE_HASH_IF_ACK);
	assert_int_equal(wire_hash_if_ack_decode(j->buf, len, &answered), 0);
	if (answered) {
		assert_int_equal(peer_conn_recv_frame(j->c, &type, j->buf, RESYNC_WIRE_FRAME_MAX, &len),
				 0);
		assert_int_equal(type, WIRE_HASH_REPLY);
		assert_int_equal(wire_hash_reply_decode(j->buf, len, &rep), 0);
		assert_int_equal(rep.n_hashes, DIV_ROUND_UP(SIZE, RESYNC_PAGE));
	}
	assert_int_equal(peer_conn_send_frame(j->c, WIRE_STATUS_REQ, NULL, 0), 0);
	assert_int_equal(peer_conn_recv_frame(j->c, &type, j->buf, RESYNC_WIRE_FRAME_MAX, &len), 0);
	assert_int_equal(type, WIRE_STATUS);
	return answered;
}

/* The secondary's side of HASH_REQ_IF (session.c): declined while the
 * quick way is open to the primary (its bitmap trusted, at the primary's
 * generation or its bitmap's base), answered with the level when the
 * primary is bound to compare (another generation, the bitmap not
 * trusted, Inconsistent). */
static void test_hash_req_if(void **state)
{
	struct fx *f = *state;
	struct meta_uuid g, other, none = {{0}};
	struct job *j;

	fx_nodes(f);
	assert_int_equal(meta_uuid_random(&g), 0);
	assert_int_equal(meta_uuid_random(&other), 0);
	assert_int_equal(meta_generation_set(f->s->meta, &g), 0);
	assert_int_equal(meta_trusted_set(f->s->meta, true), 0);
	j = job_open(f, false);
	send_hash_req_if(j, &g, &none);
	assert_false(recv_hash_if(j));
	send_hash_req_if(j, &other, &g); /* at the base */
	assert_false(recv_hash_if(j));
	send_hash_req_if(j, &other, &none);
	assert_true(recv_hash_if(j));
	send_hash_req_if(j, &other, &other);
	assert_true(recv_hash_if(j));
	assert_int_equal(meta_trusted_set(f->s->meta, false), 0);
	send_hash_req_if(j, &g, &none);
	assert_true(recv_hash_if(j));
	assert_int_equal(meta_trusted_set(f->s->meta, true), 0);
	assert_int_equal(meta_state_set(f->s->meta, META_STATE_INCONSISTENT), 0);
	send_hash_req_if(j, &g, &none);
	assert_true(recv_hash_if(j));
	assert_int_equal(meta_state_set(f->s->meta, META_STATE_OUTDATED), 0);
	send_hash_req_if(j, &g, &none);
	assert_false(recv_hash_if(j));
	job_end(f);
}

/* HASH_REQ_MORE of the leaves [first, first + count) to a real session. */
static void send_hash_req_more(struct job *j, uint64_t first, uint64_t count)
{
	struct hashtree_range r = {first, count};
	size_t len;

	assert_int_equal(wire_hash_req_encode(0x5eed, 0, NODE_FINE_FANOUT, RESYNC_PAGE, &r, 1, j->buf,
					      RESYNC_WIRE_FRAME_MAX, &len), 0);
	assert_int_equal(peer_conn_send_frame(j->c, WIRE_HASH_REQ_MORE, j->buf, len), 0);
}

/* A HASH_REQ_IF with two HASH_REQ_MOREs behind it (512 leaves, then the
 * other 513): the HASH_IF_ACK, and when answered the three replies, in
 * order, with no other ACK; a STATUS right after shows nothing else came. */
static bool hash_if_more(struct job *j, const struct meta_uuid *gen, const struct meta_uuid *base)
{
	const uint64_t nl = DIV_ROUND_UP(SIZE, RESYNC_PAGE), want[] = {nl, 512, nl - 512};
	struct wire_hash_reply rep;
	bool answered = false;
	uint16_t type;
	size_t len;

	send_hash_req_if(j, gen, base);
	send_hash_req_more(j, 0, 512);
	send_hash_req_more(j, 512, nl - 512);
	assert_int_equal(peer_conn_send_frame(j->c, WIRE_STATUS_REQ, NULL, 0), 0);
	assert_int_equal(peer_conn_recv_frame(j->c, &type, j->buf, RESYNC_WIRE_FRAME_MAX, &len), 0);
	assert_int_equal(type, WIRE_HASH_IF_ACK);
	assert_int_equal(wire_hash_if_ack_decode(j->buf, len, &answered), 0);
	for (size_t i = 0; answered && i < ARRAY_SIZE(want); i++) {
		assert_int_equal(peer_conn_recv_frame(j->c, &type, j->buf, RESYNC_WIRE_FRAME_MAX, &len),
				 0);
		assert_int_equal(type, WIRE_HASH_REPLY);
		assert_int_equal(wire_hash_reply_decode(j->buf, len, &rep), 0);
		assert_int_equal(rep.n_hashes, want[i]);
	}
	assert_int_equal(peer_conn_recv_frame(j->c, &type, j->buf, RESYNC_WIRE_FRAME_MAX, &len), 0);
	assert_int_equal(type, WIRE_STATUS);
	return answered;
}

/* The session ends at what it does not take: an ERROR, then nothing. */
static void assert_refused(struct job *j)
{
	uint16_t type;
	size_t len;

	assert_int_equal(peer_conn_recv_frame(j->c, &type, j->buf, RESYNC_WIRE_FRAME_MAX, &len), 0);
	assert_int_equal(type, WIRE_ERROR);
	assert_true(peer_conn_recv_frame(j->c, &type, j->buf, RESYNC_WIRE_FRAME_MAX, &len) < 0);
}

/* The secondary's side of HASH_REQ_MORE (session.c): the rest of a first
 * level is answered exactly as the HASH_REQ_IF before it was, declined
 * (the quick way open: no tree built, nothing sent) or answered, and
 * without an ACK of its own; one with no HASH_REQ_IF before it in the
 * session, or to a secondary without WIRE_FEATURE_HASH_MORE, ends the
 * session with an ERROR. */
static void test_hash_req_more(void **state)
{
	struct fx *f = *state;
	struct meta_uuid g, other, none = {{0}};
	struct job *j;
	char off[32];

	fx_nodes(f);
	assert_int_equal(meta_uuid_random(&g), 0);
	assert_int_equal(meta_uuid_random(&other), 0);
	assert_int_equal(meta_generation_set(f->s->meta, &g), 0);
	assert_int_equal(meta_trusted_set(f->s->meta, true), 0);
	j = job_open(f, false);
	assert_true(j->features & WIRE_FEATURE_HASH_MORE);
	assert_false(hash_if_more(j, &g, &none));
	assert_null(f->sess->tree); /* declined: no tree built for the rest either */
	assert_true(hash_if_more(j, &other, &none));
	assert_false(hash_if_more(j, &g, &none)); /* the last HASH_REQ_IF's answer */
	job_end(f);

	/* No HASH_REQ_IF before it. */
	j = job_open(f, false);
	send_hash_req_more(j, 0, 512);
	assert_refused(j);
	job_end(f);

	/* A secondary of an older build (the bit masked). */
	snprintf(off, sizeof(off), "%#x", (unsigned)WIRE_FEATURE_HASH_MORE);
	setenv("RESYNC_FEATURES_OFF", off, 1);
	j = job_open(f, false);
	assert_false(j->hello.features & WIRE_FEATURE_HASH_MORE);
	send_hash_req_if(j, &other, &none);
	send_hash_req_more(j, 0, 512);
	{
		uint16_t type;
		size_t len;

		assert_int_equal(peer_conn_recv_frame(j->c, &type, j->buf, RESYNC_WIRE_FRAME_MAX, &len),
				 0);
		assert_int_equal(type, WIRE_HASH_IF_ACK);
		assert_int_equal(peer_conn_recv_frame(j->c, &type, j->buf, RESYNC_WIRE_FRAME_MAX, &len),
				 0);
		assert_int_equal(type, WIRE_HASH_REPLY);
	}
	assert_refused(j);
	unsetenv("RESYNC_FEATURES_OFF");
	job_end(f);
}

/* 69,632 pages: at 50 ms the leaves are the first level, in 2 requests. */
#define BIG ((uint64_t)272 << 20)

/* Whether the two images hold the same bytes. */
static bool images_equal(struct fx *f, const char *a, const char *b)
{
	char *pa = tcluster_image(&f->tc, a), *pb = tcluster_image(&f->tc, b);
	unsigned char *x = malloc(1 << 20), *y = malloc(1 << 20);
	FILE *fa = fopen(pa, "rb"), *fb = fopen(pb, "rb");
	bool same = fa && fb && x && y;
	size_t n;

	while (same && (n = fread(x, 1, 1 << 20, fa)) > 0)
		same = fread(y, 1, n, fb) == n && !memcmp(x, y, n);
	same = same && fread(y, 1, 1, fb) == 0;
	if (fa)
		fclose(fa);
	if (fb)
		fclose(fb);
	free(x);
	free(y);
	free(pa);
	free(pb);
	return same;
}

/* A page of seed's bytes written at page pg of n's volume. */
static void big_page(struct node *n, uint64_t pg, uint64_t seed)
{
	unsigned char page[RESYNC_PAGE];

	testlib_fill(page, sizeof(page), seed);
	assert_int_equal(fd_pwrite_full(volume_fd(n->vol), page, sizeof(page), pg * RESYNC_PAGE), 0);
}

/* A first level of several requests (job-walk.c), at 272 MiB and 50 ms:
 * the prefetch asks for the leaves in 2 requests, the walk reads both
 * replies as its first level's and finds the pages on either side of
 * the split; the plan's memo holds all 69,632 of them. The resync that
 * takes the memo asks for the level again as its flight of hellos does
 * (job_memo_first_req() and the rest), ends its walk there, and tells
 * the moved-data search each leaf once (walk_memo_use(): the leaves
 * were noted from the level's replies): its COPY of a page that the
 * secondary holds elsewhere applies, and the secondary ends identical. */
static void test_walk_first_parts(void **state)
{
	struct fx *f = *state;
	const uint64_t want[] = {5, 100, 69000, 69500};
	char *pi = tcluster_image(&f->tc, "p"), *si = tcluster_image(&f->tc, "s");
	struct walk_memo m;
	struct job *j;
	size_t len;

	assert_int_equal(truncate(pi, (off_t)BIG), 0);
	assert_int_equal(truncate(si, (off_t)BIG), 0);
	free(pi);
	free(si);
	fx_open(f);
	big_page(f->p, 5, 1);
	big_page(f->p, 69000, 2);
	big_page(f->p, 69500, 3);
	big_page(f->s, 100, 3); /* the primary's page 69500, elsewhere */
	setenv("RESYNC_WALK_RTT_USEC", "50000", 1);

	/* The plan's walk. */
	j = job_open(f, false);
	job_tree(f, 0x5eed);
	j->memo_make = true;
	job_prefetch(j, j->seed);
	assert_true(j->prefetched);
	assert_int_equal(j->first_req.level, 0);
	assert_int_equal(j->first_req.count, BIG / RESYNC_PAGE);
	assert_int_equal(job_walk_first_parts(j->first_req.count), 2);
	assert_int_equal(job_compare(j, j->c, j->buf), 0);
	assert_false(j->prefetched);
	assert_true(j->memo.set);
	assert_int_equal(j->memo.first_level, 0);
	assert_int_equal(j->memo.nfirst, BIG / RESYNC_PAGE);
	assert_int_equal(j->memo.nleaves_diff, ARRAY_SIZE(want));
	for (size_t i = 0; i < ARRAY_SIZE(want); i++) {
		assert_int_equal(j->memo.leaves[i], want[i]);
		assert_int_equal(j->ranges.v[i].off, want[i] * RESYNC_PAGE);
	}
	m = j->memo;
	memset(&j->memo, 0, sizeof(j->memo));

	/* The resync: the memo's level asked for again, in 2 requests. */
	j = job_open(f, true);
	job_tree(f, 0x5eed);
	j->memo_in = &m;
	assert_int_equal(job_memo_first_req(j, &m, &len), 0);
	assert_int_equal(job_walk_first_parts(j->first_req.count), 2);
	assert_int_equal(peer_conn_send_frame(j->c, WIRE_HASH_REQ, j->buf, len), 0);
	assert_int_equal(job_walk_first_rest(j, j->c), 0);
	j->prefetched = true; /* as resync_early_settle() finds it */
	assert_int_equal(job_compare(j, j->c, j->buf), 0);
	assert_true(j->memo_used);
	assert_int_equal(j->ranges.n, ARRAY_SIZE(want));
	assert_int_equal(job_transfer(j, j->c, j->buf), 0);
	assert_int_equal(j->bytes_copied, RESYNC_PAGE); /* page 69500, from page 100 */
	job_end(f);
	assert_true(images_equal(f, "p", "s"));
	unsetenv("RESYNC_WALK_RTT_USEC");
	walk_memo_release(&m);
}

/* What the primary remembers of its peers' features (job-early.c): kept
 * in its state file, read back at a start; a malformed entry is ignored. */
static void test_peer_features(void **state)
{
	struct fx *f = *state;
	const struct node_config *s;
	const char *bad[] = {
		"{\"peer_features\": \"x\"}",
		"{\"peer_features\": {\"s\": \"x\", \"nobody\": 5}}",
		"{\"peer_features\": [1, 2]}",
	};

	fx_nodes(f);
	s = cluster_config_node(f->tc.cfg, "s");
	assert_int_equal(node_peer_features(f->p, s), 0); /* never seen */
	node_peer_features_note(f->p, s, WIRE_FEATURE_HASH_IF | WIRE_FEATURE_FINE_LEAVES);
	assert_int_equal(node_peer_features(f->p, s), WIRE_FEATURE_HASH_IF | WIRE_FEATURE_FINE_LEAVES);
	free(f->p->peer_features);
	f->p->peer_features = NULL;
	assert_int_equal(node_peer_features(f->p, s), 0);
	node_state_load(f->p);
	assert_int_equal(node_peer_features(f->p, s), WIRE_FEATURE_HASH_IF | WIRE_FEATURE_FINE_LEAVES);
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		assert_int_equal(testlib_file_write(f->p->state_path, bad[i], strlen(bad[i])), 0);
		free(f->p->peer_features);
		f->p->peer_features = NULL;
		node_state_load(f->p);
		assert_int_equal(node_peer_features(f->p, s), 0);
	}
}

/* job_early_rest(): pass 1's ranges less those sent behind the hellos,
 * ascending, cut where they overlap. */
static void test_early_rest(void **state)
{
	struct rangelist l = {0}, sent = {0}, rest = {0}, none = {0};
	const struct {
		uint64_t off, len;
	} want[] = {{0, 5}, {25, 5}, {40, 5}, {200, 10}};

	(void)state;
	assert_int_equal(rangelist_add(&l, 0, 10), 0);
	assert_int_equal(rangelist_add(&l, 20, 10), 0);
	assert_int_equal(rangelist_add(&l, 40, 10), 0);
	assert_int_equal(rangelist_add(&l, 60, 10), 0);
	assert_int_equal(rangelist_add(&l, 200, 10), 0);
	assert_int_equal(rangelist_add(&sent, 5, 20), 0);
	assert_int_equal(rangelist_add(&sent, 45, 30), 0);
	assert_int_equal(rangelist_add(&sent, 100, 10), 0);
	assert_int_equal(job_early_rest(&l, &sent, &rest), 0);
	assert_int_equal(rest.n, ARRAY_SIZE(want));
	for (size_t i = 0; i < ARRAY_SIZE(want); i++) {
		assert_int_equal(rest.v[i].off, want[i].off);
		assert_int_equal(rest.v[i].len, want[i].len);
	}
	/* Nothing sent: all of it; everything sent: nothing. */
	rangelist_release(&rest);
	assert_int_equal(job_early_rest(&l, &none, &rest), 0);
	assert_int_equal(rangelist_bytes(&rest), rangelist_bytes(&l));
	rangelist_release(&rest);
	assert_int_equal(job_early_rest(&l, &l, &rest), 0);
	assert_int_equal(rest.n, 0);
	rangelist_release(&rest);
	rangelist_release(&l);
	rangelist_release(&sent);
}

/* job_early_cut(): the early ranges that went before the hellos'
 * answers came, and pass 1's rest of them (job_early_rest()) exactly
 * what did not go. */
static void test_early_cut(void **state)
{
	struct rangelist l = {0}, e = {0}, rest = {0};
	const uint64_t cuts[] = {0, 5, 10, 15, 20, 25, 30, 45, 61, 1000};

	(void)state;
	for (size_t c = 0; c < ARRAY_SIZE(cuts); c++) {
		uint64_t want = 0;

		rangelist_release(&l);
		assert_int_equal(rangelist_add(&l, 0, 10), 0);
		assert_int_equal(rangelist_add(&l, 20, 10), 0);
		assert_int_equal(rangelist_add(&l, 40, 20), 0);
		for (size_t i = 0; i < l.n; i++)
			if (l.v[i].off < cuts[c])
				want += MIN(l.v[i].len, cuts[c] - l.v[i].off);
		rangelist_release(&e);
		for (size_t i = 0; i < l.n; i++)
			assert_int_equal(rangelist_add(&e, l.v[i].off, l.v[i].len), 0);
		assert_int_equal(job_early_cut(&e, cuts[c]), 0);
		assert_int_equal(rangelist_bytes(&e), want);
		for (size_t i = 0; i < e.n; i++) {
			assert_true(e.v[i].len > 0);
			assert_true(e.v[i].off + e.v[i].len <= cuts[c]);
		}
		/* What went and what pass 1 sends: the whole, once. */
		rangelist_release(&rest);
		assert_int_equal(job_early_rest(&l, &e, &rest), 0);
		assert_int_equal(rangelist_bytes(&rest) + want, rangelist_bytes(&l));
		for (size_t i = 0; i < rest.n; i++)
			assert_true(rest.v[i].off >= cuts[c]); /* below it, all went */
	}
	rangelist_release(&l);
	rangelist_release(&e);
	rangelist_release(&rest);
}

/* job_early_wanted(): data behind the hellos only behind a first level
 * of at most NODE_EARLY_FIRST_MAX nodes (two requests), whose replies
 * fit in the sockets' buffers while the primary is still sending. */
static void test_early_first_max(void **state)
{
	struct walk_memo m = {.set = true, .nleaves_diff = 1, .leaf = RESYNC_PAGE,
			      .features = WIRE_FEATURE_EARLY_DATA, .quiet = true};
	struct job *j = calloc(1, sizeof(*j));
	struct cluster_config cfg = {0};

	(void)state;
	assert_non_null(j);
	unsetenv("RESYNC_EARLY_OFF");
	j->write = true;
	j->memo_in = &m;
	assert_int_equal(NODE_EARLY_FIRST_MAX, 2 * RESYNC_WIRE_HASHES_MAX);
	m.nfirst = 4096;
	assert_true(job_early_wanted(j, &cfg, false));
	m.nfirst = NODE_EARLY_FIRST_MAX; /* 512 MiB of pages at 50 ms */
	assert_true(job_early_wanted(j, &cfg, false));
	assert_false(job_early_wanted(j, &cfg, true)); /* forced */
	m.nfirst = NODE_EARLY_FIRST_MAX + 1;
	assert_false(job_early_wanted(j, &cfg, false));
	m.nfirst = 8 * (uint64_t)RESYNC_WIRE_HASHES_MAX; /* 2 GiB at 100 ms */
	assert_false(job_early_wanted(j, &cfg, false));
	free(j);
}

/* node_settle_wait(): the end of pass 1 waits for its checkpoints' ACKs
 * unless a measured lower bound of the link's rate drains what no ACK
 * covers within the share of fence_max; nothing measured: it waits. */
static void test_settle_wait(void **state)
{
	const uint64_t share = 500000;	      /* us: fence_max 5 s / 10 */
	const uint64_t tail = 5400000;	      /* bytes: 5.4 MB not acknowledged */
	const double fast = 400.0, slow = 4.0; /* bytes/us: 400 and 4 MB/s */

	(void)state;
	assert_false(node_settle_wait(0, share, 0, 0, 0));
	/* Nothing measured: no pace to judge by. */
	assert_true(node_settle_wait(tail, share, 0, 0, 0));
	assert_true(node_settle_wait(1, share, 0, 0, 0));
	/* No ACK yet: the hash replies' rate decides (the plan's). */
	assert_false(node_settle_wait(tail, share, 0, 0, fast));
	assert_true(node_settle_wait(tail, share, 0, 0, slow)); /* 1.35 s */
	/* At the bound: what drains within the share exactly goes on. */
	assert_false(node_settle_wait((uint64_t)(slow * share), share, 0, 0, slow));
	assert_true(node_settle_wait((uint64_t)(slow * share) + 1, share, 0, 0, slow));
	/* The ACKs' pace alone: 5.4 MB acknowledged in 0.1 s, or in 10 s. */
	assert_false(node_settle_wait(tail, share, tail, 100000, 0));
	assert_true(node_settle_wait(tail, share, tail, 10000000, 0));
	/* Both measured: the faster lower bound; both slow: it waits. */
	assert_false(node_settle_wait(tail, share, tail, 10000000, fast));
	assert_false(node_settle_wait(tail, share, tail, 100000, slow));
	assert_true(node_settle_wait(tail, share, tail, 10000000, slow));
	/* An ACK without its time is no measure. */
	assert_true(node_settle_wait(tail, share, tail, 0, 0));
}

/* moved-int.h's table: every hash put is found (its entry among the
 * candidates), also when many share the probe's start and the filter's
 * bit; a hash never put is a candidate only where its 32 tag bits and
 * filter bit collide, never here. */
static void test_moved_table(void **state)
{
	enum { N = 5000 };
	struct moved_table t;
	struct hash128 *h = malloc(N * sizeof(*h));
	uint64_t x = 0x9e3779b97f4a7c15ull;

	(void)state;
	assert_non_null(h);
	for (size_t k = 0; k < N; k++) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		h[k] = (struct hash128){x, x * 0x2545f4914f6cdd1dull};
		if (k % 10 == 0) /* a run that starts at one slot and one bit */
			h[k].lo = 7, h[k].hi = (h[k].hi & 0xffffffffull) | (5ull << 32);
	}
	assert_int_equal(moved_table_init(&t, N), 0);
	for (size_t k = 0; k < N; k++)
		moved_table_put(&t, &h[k], k);
	for (size_t k = 0; k < N; k++) {
		bool found = false;

		for (size_t s = moved_table_next(&t, &h[k], SIZE_MAX); s != SIZE_MAX;
		     s = moved_table_next(&t, &h[k], s)) {
			assert_true(t.slot[s].k1 >= 1 && t.slot[s].k1 <= N);
			assert_int_equal(t.slot[s].tag, (uint32_t)h[t.slot[s].k1 - 1].hi);
			found |= t.slot[s].k1 - 1 == k;
		}
		assert_true(found);
	}
	for (size_t k = 0; k < N; k++) {
		struct hash128 other = {h[k].lo, h[k].hi ^ 1}; /* its slot, another tag */

		for (size_t s = moved_table_next(&t, &other, SIZE_MAX); s != SIZE_MAX;
		     s = moved_table_next(&t, &other, s))
			assert_int_equal(t.slot[s].tag, (uint32_t)other.hi);
	}
	moved_table_release(&t);
	free(h);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_compare_transfer, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cancel_before, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cancel_during, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cancel_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_quick, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pass_paced, setup, teardown),
		cmocka_unit_test_setup_teardown(test_walk_bad_replies, setup, teardown),
		cmocka_unit_test_setup_teardown(test_walk_memo, setup, teardown),
		cmocka_unit_test_setup_teardown(test_walk_first_level, setup, teardown),
		cmocka_unit_test_setup_teardown(test_hash_req_if, setup, teardown),
		cmocka_unit_test_setup_teardown(test_hash_req_more, setup, teardown),
		cmocka_unit_test_setup_teardown(test_walk_first_parts, setup, teardown),
		cmocka_unit_test_setup_teardown(test_peer_features, setup, teardown),
		cmocka_unit_test(test_early_rest),
		cmocka_unit_test(test_early_cut),
		cmocka_unit_test(test_early_first_max),
		cmocka_unit_test(test_settle_wait),
		cmocka_unit_test(test_moved_table),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
