/*
 * lib/site: the plan of one controller, derived once from the site: what it
 * owns, what it uses, and for each other controller which things go out to it
 * and which come in from it. The sync engine walks these lists instead of
 * scanning every thing of the site on each change.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "site/site.h"

/* calloc for an index list; an empty list stays NULL. */
static int alloc_list(size_t n, uint32_t **out)
{
	*out = NULL;
	if (n == 0)
		return 0;
	*out = calloc(n, sizeof(**out));
	return *out ? 0 : -ENOMEM;
}

static bool thing_has_user(const struct site_thing *t, uint32_t ctrl)
{
	for (size_t i = 0; i < t->n_users; i++)
		if (t->users[i] == ctrl)
			return true;
	return false;
}

int site__plan_new(const struct tsync_site *site, uint32_t me, struct site_plan **ret)
{
	struct site_plan *plan = NULL;
	size_t n_ctrl;
	int r;

	if (!site || !ret)
		return -EINVAL;
	n_ctrl = site->n_controllers;
	if (me >= n_ctrl)
		return -ERANGE;

	plan = calloc(1, sizeof(*plan));
	if (!plan)
		return -ENOMEM;
	plan->me = me;
	plan->peer_of_ctrl = calloc(n_ctrl, sizeof(*plan->peer_of_ctrl));
	if (!plan->peer_of_ctrl) {
		r = -ENOMEM;
		goto leave;
	}
	if (n_ctrl > 1) {
		plan->peers = calloc(n_ctrl - 1, sizeof(*plan->peers));
		if (!plan->peers) {
			r = -ENOMEM;
			goto leave;
		}
	}
	for (uint32_t c = 0; c < n_ctrl; c++) {
		if (c == me) {
			plan->peer_of_ctrl[c] = -1;
			continue;
		}
		plan->peers[plan->n_peers].ctrl = c;
		plan->peer_of_ctrl[c] = (int32_t)plan->n_peers;
		plan->n_peers++;
	}

	/* First count, so every list is allocated once at its final size. */
	for (size_t i = 0; i < site->n_things; i++) {
		const struct site_thing *t = &site->things[i];

		if (t->owner == me) {
			plan->n_owned++;
			for (size_t u = 0; u < t->n_users; u++)
				plan->peers[plan->peer_of_ctrl[t->users[u]]].n_out++;
		} else if (thing_has_user(t, me)) {
			plan->n_used++;
			plan->peers[plan->peer_of_ctrl[t->owner]].n_in++;
		}
	}
	r = alloc_list(plan->n_owned, &plan->owned);
	if (r == 0)
		r = alloc_list(plan->n_used, &plan->used);
	for (size_t p = 0; r == 0 && p < plan->n_peers; p++) {
		r = alloc_list(plan->peers[p].n_out, &plan->peers[p].out);
		if (r == 0)
			r = alloc_list(plan->peers[p].n_in, &plan->peers[p].in);
	}
	if (r < 0)
		goto leave;

	/* Then fill, with the counts rebuilt as cursors. */
	plan->n_owned = plan->n_used = 0;
	for (size_t p = 0; p < plan->n_peers; p++)
		plan->peers[p].n_out = plan->peers[p].n_in = 0;
	for (size_t i = 0; i < site->n_things; i++) {
		const struct site_thing *t = &site->things[i];

		if (t->owner == me) {
			plan->owned[plan->n_owned++] = (uint32_t)i;
			for (size_t u = 0; u < t->n_users; u++) {
				struct plan_peer *peer = &plan->peers[plan->peer_of_ctrl[t->users[u]]];
				peer->out[peer->n_out++] = (uint32_t)i;
			}
		} else if (thing_has_user(t, me)) {
			struct plan_peer *peer = &plan->peers[plan->peer_of_ctrl[t->owner]];
			plan->used[plan->n_used++] = (uint32_t)i;
			peer->in[peer->n_in++] = (uint32_t)i;
		}
	}
	*ret = plan;
	plan = NULL;
	r = 0;
leave:
	site__plan_free(plan);
	return r;
}

void site__plan_free(struct site_plan *plan)
{
	if (!plan)
		return;
	if (plan->peers) {
		for (size_t p = 0; p < plan->n_peers; p++) {
			free(plan->peers[p].out);
			free(plan->peers[p].in);
		}
	}
	free(plan->peers);
	free(plan->owned);
	free(plan->used);
	free(plan->peer_of_ctrl);
	free(plan);
}
