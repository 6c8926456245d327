/*
 * thingsync-collectord: batches stored apart from the event loop (see
 * storeq.h). One worker thread takes the jobs in order from `todo`, stores
 * each and moves it to `done`; an eventfd wakes the loop, which calls the
 * jobs' `done` in the same order.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <event2/event.h>

#include "storeq.h"

struct list {
	struct storeq_job *head, *tail;
	size_t n;
};

struct storeq {
	struct db *db;
	struct event *wake; /* the eventfd's: jobs are done */
	int efd;
	pthread_t thread;
	bool started;
	pthread_mutex_t lock;
	pthread_cond_t work;
	/* under lock: */
	struct list todo, done;
	bool stop;
};

static void list_push(struct list *l, struct storeq_job *job)
{
	job->next = NULL;
	if (l->tail)
		l->tail->next = job;
	else
		l->head = job;
	l->tail = job;
	l->n++;
}

static struct storeq_job *list_take(struct list *l)
{
	struct storeq_job *job = l->head;

	if (job) {
		l->head = job->next;
		if (!l->head)
			l->tail = NULL;
		l->n--;
		job->next = NULL;
	}
	return job;
}

static void *worker(void *arg)
{
	struct storeq *q = arg;
	const uint64_t one = 1;

	pthread_mutex_lock(&q->lock);
	for (;;) {
		struct storeq_job *job;

		while (!q->stop && !q->todo.head)
			pthread_cond_wait(&q->work, &q->lock);
		if (q->stop)
			break;
		job = list_take(&q->todo);
		pthread_mutex_unlock(&q->lock);
		job->r = q->db->ops->store(q->db, job->batch, job->fail_before_commit, &job->res);
		pthread_mutex_lock(&q->lock);
		list_push(&q->done, job);
		/* The loop reads the counter: one wake-up however many are done. */
		if (write(q->efd, &one, sizeof(one)) < 0) {
			/* Only EAGAIN at 2^64-1 wake-ups not read: the loop is woken anyway. */
		}
	}
	pthread_mutex_unlock(&q->lock);
	return NULL;
}

/* Calls `done` of the jobs done, in order (on the loop). */
static void finish_done(struct storeq *q)
{
	struct list done;

	pthread_mutex_lock(&q->lock);
	done = q->done;
	q->done = (struct list){0};
	pthread_mutex_unlock(&q->lock);
	for (struct storeq_job *job; (job = list_take(&done)) != NULL;)
		job->done(job);
}

static void wake_cb(evutil_socket_t fd, short what, void *arg)
{
	uint64_t n;

	if (read(fd, &n, sizeof(n)) < 0) {
		/* EAGAIN: woken for jobs another read took already. */
	}
	finish_done(arg);
}

int storeq__new(struct event_base *base, struct db *db, struct storeq **ret)
{
	struct storeq *q = calloc(1, sizeof(*q));

	if (!q) {
		db->ops->close(db);
		return -ENOMEM;
	}
	q->db = db;
	q->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	pthread_mutex_init(&q->lock, NULL);
	pthread_cond_init(&q->work, NULL);
	if (q->efd >= 0)
		q->wake = event_new(base, q->efd, EV_READ | EV_PERSIST, wake_cb, q);
	if (!q->wake || event_add(q->wake, NULL) < 0 || pthread_create(&q->thread, NULL, worker, q) != 0) {
		storeq__free(q);
		return -ENOMEM;
	}
	q->started = true;
	*ret = q;
	return 0;
}

int storeq__submit(struct storeq *q, struct storeq_job *job)
{
	int r = 0;

	pthread_mutex_lock(&q->lock);
	if (q->todo.n >= STOREQ_MAX) {
		r = -EBUSY;
	} else {
		list_push(&q->todo, job);
		pthread_cond_signal(&q->work);
	}
	pthread_mutex_unlock(&q->lock);
	return r;
}

void storeq__free(struct storeq *q)
{
	if (!q)
		return;
	if (q->started) {
		pthread_mutex_lock(&q->lock);
		q->stop = true;
		pthread_cond_signal(&q->work);
		pthread_mutex_unlock(&q->lock);
		pthread_join(q->thread, NULL);
	}
	finish_done(q);
	for (struct storeq_job *job; (job = list_take(&q->todo)) != NULL;) {
		job->r = -ECANCELED;
		job->done(job);
	}
	if (q->wake)
		event_free(q->wake);
	if (q->efd >= 0)
		close(q->efd);
	pthread_cond_destroy(&q->work);
	pthread_mutex_destroy(&q->lock);
	q->db->ops->close(q->db);
	free(q);
}
