/* connect_rate: how many connect() calls per second one process gets.
 *
 *   connect_rate udp DST PORT COUNT   socket() + connect() + close(); sends nothing,
 *                                     so it times the connect path and its hooks only
 *   connect_rate tcp DST PORT COUNT   a full handshake per connection, closed with an
 *                                     RST (SO_LINGER 0) so no TIME_WAIT piles up
 *       ... COUNT --alternate BLOCKS NETNS CGROUP...
 *                                     BLOCKS times, move into each cgroup in turn (order
 *                                     rotating) and time COUNT connects there. Start it
 *                                     outside the network namespace NETNS ("-": stay):
 *                                     `ip netns exec` would hide the cgroup2 mount below
 *                                     /sys, so it opens the cgroups first, then enters
 *   connect_rate serve PORT           accept and close, forever: the peer for tcp
 *
 * Prints connects per second of elapsed time and of this thread's CPU time:
 * {"wall": R, "cpu": R} or, alternating, {"wall": [[R per block] per cgroup], "cpu": ...}.
 * C, not Python: an interpreter's per-call overhead would hide ~100 ns. One
 * process alternating every few milliseconds compares the cgroups under the
 * same load from the rest of the machine: a socket belongs to the cgroup of
 * the task that creates it, so only the hooks of the current cgroup run.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double clock_seconds(clockid_t clock)
{
	struct timespec ts;

	clock_gettime(clock, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

struct rate {
	double wall;  /* connects per second of elapsed time */
	double cpu;   /* connects per second of this thread's CPU time (user + system) */
};

static int fail(const char *what)
{
	fprintf(stderr, "connect_rate: %s: %s\n", what, strerror(errno));
	return 1;
}

static int serve(int port)
{
	struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = htons(port) };
	int one = 1, fd = socket(AF_INET, SOCK_STREAM, 0);

	if (fd < 0)
		return fail("socket");
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) || listen(fd, 4096))
		return fail("bind/listen");
	for (;;) {
		int conn = accept(fd, NULL, NULL);

		if (conn >= 0)
			close(conn);
	}
}

/* COUNT connects; returns 0, or -1 on failure. CPU time is what a machine
 * shared with other work measures well: time slices given to other processes
 * stretch the elapsed time, not this. */
static int connects(const struct sockaddr_in *dst, int tcp, int count, struct rate *rate)
{
	struct linger rst = { .l_onoff = 1, .l_linger = 0 };
	double wall = clock_seconds(CLOCK_MONOTONIC), cpu = clock_seconds(CLOCK_THREAD_CPUTIME_ID);

	for (int i = 0; i < count; i++) {
		int fd = socket(AF_INET, tcp ? SOCK_STREAM : SOCK_DGRAM, 0);

		if (fd < 0) {
			fail("socket");
			return -1;
		}
		if (tcp)
			setsockopt(fd, SOL_SOCKET, SO_LINGER, &rst, sizeof(rst));
		if (connect(fd, (const struct sockaddr *)dst, sizeof(*dst))) {
			fail("connect");
			return -1;
		}
		close(fd);
	}
	wall = clock_seconds(CLOCK_MONOTONIC) - wall;
	cpu = clock_seconds(CLOCK_THREAD_CPUTIME_ID) - cpu;
	/* 0 = not measurable: some kernels (UML) count thread CPU time in ticks. */
	rate->wall = wall > 0 ? count / wall : 0;
	rate->cpu = cpu > 0 ? count / cpu : 0;
	return 0;
}

static void print_rates(const char *name, const struct rate *rates, int ncg, int blocks)
{
	printf("\"%s\": [", name);
	for (int c = 0; c < ncg; c++) {
		printf("%s[", c ? ", " : "");
		for (int b = 0; b < blocks; b++) {
			const struct rate *r = &rates[c * blocks + b];

			printf("%s%.1f", b ? ", " : "", name[0] == 'w' ? r->wall : r->cpu);
		}
		printf("]");
	}
	printf("]");
}

static int open_cgroup(const char *dir)
{
	char path[4096];
	int fd;

	snprintf(path, sizeof(path), "%s/cgroup.procs", dir);
	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		fail(path);
	return fd;
}

static int enter_netns(const char *name)
{
	char path[4096];
	int fd;

	if (!strcmp(name, "-"))
		return 0;
	snprintf(path, sizeof(path), "/run/netns/%s", name);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || setns(fd, CLONE_NEWNET))
		return fail(path);
	close(fd);
	return 0;
}

int main(int argc, char **argv)
{
	struct sockaddr_in dst = { .sin_family = AF_INET };
	int tcp, count, blocks, ncg, *cgroups;
	struct rate *rates;

	if (argc == 3 && !strcmp(argv[1], "serve"))
		return serve(atoi(argv[2]));
	if ((argc != 5 && (argc < 9 || strcmp(argv[5], "--alternate"))) ||
	    (strcmp(argv[1], "udp") && strcmp(argv[1], "tcp"))) {
		fprintf(stderr, "usage: connect_rate udp|tcp DST PORT COUNT [--alternate BLOCKS NETNS CGROUP...]\n"
				"       connect_rate serve PORT\n");
		return 2;
	}
	tcp = !strcmp(argv[1], "tcp");
	if (inet_pton(AF_INET, argv[2], &dst.sin_addr) != 1) {
		fprintf(stderr, "connect_rate: bad IPv4 address %s\n", argv[2]);
		return 2;
	}
	dst.sin_port = htons(atoi(argv[3]));
	count = atoi(argv[4]);
	if (argc == 5) {
		struct rate rate;

		if (connects(&dst, tcp, count, &rate))
			return 1;
		printf("{\"wall\": %.1f, \"cpu\": %.1f}\n", rate.wall, rate.cpu);
		return 0;
	}

	blocks = atoi(argv[6]);
	ncg = argc - 8;
	rates = calloc((size_t)blocks * ncg, sizeof(*rates));
	cgroups = calloc(ncg, sizeof(*cgroups));
	if (!rates || !cgroups)
		return fail("calloc");
	for (int c = 0; c < ncg; c++)
		if ((cgroups[c] = open_cgroup(argv[8 + c])) < 0)
			return 1;
	if (enter_netns(argv[7]))
		return 1;
	for (int b = 0; b < blocks; b++) {
		for (int k = 0; k < ncg; k++) {
			int c = (b + k) % ncg;  /* rotate who goes first */

			/* "0": the writing process. */
			if (pwrite(cgroups[c], "0\n", 2, 0) != 2)
				return fail(argv[8 + c]);
			if (connects(&dst, tcp, count, &rates[c * blocks + b]))
				return 1;
		}
	}
	printf("{");
	print_rates("wall", rates, ncg, blocks);
	printf(", ");
	print_rates("cpu", rates, ncg, blocks);
	printf("}\n");
	return 0;
}
