#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "node-int.h"

static void *writeback_thread(void *arg)
{
	struct writeback *w = arg;

	pthread_mutex_lock(&w->lock);
	for (;;) {
		uint64_t off, len;

		while (!w->n && !w->stop)
			pthread_cond_wait(&w->cond, &w->lock);
		if (!w->n)
			break;
		off = w->q[w->head].off;
		len = w->q[w->head].len;
		w->head = (w->head + 1) % WRITEBACK_QUEUE;
		w->n--;
		pthread_mutex_unlock(&w->lock);
		/* Advice only: an error shows at the fdatasync that follows. */
		(void)sync_file_range(w->fd, (off64_t)off, (off64_t)len, SYNC_FILE_RANGE_WRITE);
		FAILPOINT("secondary-writeback");
		pthread_mutex_lock(&w->lock);
	}
	pthread_mutex_unlock(&w->lock);
	return NULL;
}

void writeback_start(struct writeback *w, int fd)
{
	memset(w, 0, sizeof(*w));
	w->fd = fd;
	pthread_mutex_init(&w->lock, NULL);
	pthread_cond_init(&w->cond, NULL);
	w->started = !pthread_create(&w->t, NULL, writeback_thread, w);
}

void writeback_push(struct writeback *w, uint64_t off, uint64_t len)
{
	if (!w->started)
		return;
	pthread_mutex_lock(&w->lock);
	if (w->n < WRITEBACK_QUEUE) {
		w->q[(w->head + w->n) % WRITEBACK_QUEUE].off = off;
		w->q[(w->head + w->n) % WRITEBACK_QUEUE].len = len;
		w->n++;
		pthread_cond_signal(&w->cond);
	}
	pthread_mutex_unlock(&w->lock);
}

/* Stop the thread once the spans queued were started. */
void writeback_stop(struct writeback *w)
{
	if (!w->started)
		return;
	pthread_mutex_lock(&w->lock);
	w->stop = true;
	pthread_cond_signal(&w->cond);
	pthread_mutex_unlock(&w->lock);
	pthread_join(w->t, NULL);
	pthread_mutex_destroy(&w->lock);
	pthread_cond_destroy(&w->cond);
	w->started = false;
}
