/*
 * standalone.h: the driver of a fuzz target built without libFuzzer
 * (-DFUZZ_STANDALONE), shared by every fuzz target. `make check`
 * runs it as a smoke test: main() replays the files or directories given
 * on the command line or, with none, the target's built-in seeds plus
 * $SIDECARD_SRCDIR/<FUZZ_CORPUS>, then mutates them at random for
 * $FUZZ_SECONDS (default 2) seconds with the reproducible seed $FUZZ_SEED.
 *
 * The including file defines, before including it:
 *   FUZZ_NAME       its program name, for the messages
 *   FUZZ_CORPUS     its corpus directory under the source tree
 *   FUZZ_MAX_INPUT  the longest input kept
 *   FUZZ_MAX_EDITS  at most this many random edits per input
 *   FUZZ_ALPHABET   bytes that insertions draw from
 *   FUZZ_REPLACE_FROM_ALPHABET  1: replacements draw from it too; 0: any byte
 * and, after including it, fuzz_builtin(), which passes each built-in seed
 * to fuzz_seed(). It may define FUZZ_FINISH, a function main() calls after
 * the random inputs (not when replaying files), to check what the whole run
 * covered.
 *
 * Single-threaded; the seeds are freed before main returns.
 */
#ifndef SIDECARD_FUZZ_STANDALONE_H
#define SIDECARD_FUZZ_STANDALONE_H

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define FUZZ_MAX_SEEDS 256

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct seeds {
	char *data[FUZZ_MAX_SEEDS];
	size_t size[FUZZ_MAX_SEEDS];
	size_t n;
};

static void fuzz_builtin(struct seeds *s);

static unsigned long long rng_state;

static unsigned long long rng(void)
{
	/* xorshift64*: reproducible from FUZZ_SEED, no libc state */
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 2685821657736338717ULL;
}

/* Runs one input and keeps it as a seed for the mutations. */
static void fuzz_seed(struct seeds *s, const char *data, size_t size)
{
	LLVMFuzzerTestOneInput((const uint8_t *)data, size);
	if (s->n == FUZZ_MAX_SEEDS || size > FUZZ_MAX_INPUT)
		return;
	s->data[s->n] = malloc(size ? size : 1);
	if (s->data[s->n] == NULL)
		return;
	memcpy(s->data[s->n], data, size);
	s->size[s->n++] = size;
}

/* Runs a file, or every file under a directory, as seeds; *count of them. */
static int replay_path(struct seeds *s, const char *path, int *count)
{
	static char buf[FUZZ_MAX_INPUT];
	char child[4096];
	struct dirent *e;
	struct stat st;
	int rc = 0;
	FILE *f;
	DIR *d;

	if (stat(path, &st) != 0) {
		perror(path);
		return -1;
	}
	if (S_ISDIR(st.st_mode)) {
		if ((d = opendir(path)) == NULL)
			return -1;
		while ((e = readdir(d)) != NULL && rc == 0) {
			if (e->d_name[0] == '.')
				continue;
			snprintf(child, sizeof(child), "%s/%s", path, e->d_name);
			rc = replay_path(s, child, count);
		}
		closedir(d);
		return rc;
	}
	if ((f = fopen(path, "rb")) == NULL) {
		perror(path);
		return -1;
	}
	fuzz_seed(s, buf, fread(buf, 1, sizeof(buf), f));
	fclose(f);
	(*count)++;
	return 0;
}

static char alphabet_byte(void)
{
	static const char alphabet[] = FUZZ_ALPHABET;

	return alphabet[rng() % (sizeof(alphabet) - 1)];
}

/* One random edit of buf[0..*n): flip, replace, insert, delete, splice or truncate. */
static void mutate(char *buf, size_t *n, const struct seeds *s)
{
	size_t at = *n ? rng() % *n : 0;

	switch (rng() % 6) {
	case 0:
		if (*n)
			buf[at] ^= (char)(1u << (rng() % 8));
		break;
	case 1:
		if (*n)
			buf[at] = FUZZ_REPLACE_FROM_ALPHABET ? alphabet_byte() : (char)rng();
		break;
	case 2:
		if (*n < FUZZ_MAX_INPUT) {
			memmove(buf + at + 1, buf + at, *n - at);
			buf[at] = alphabet_byte();
			(*n)++;
		}
		break;
	case 3:
		if (*n) {
			memmove(buf + at, buf + at + 1, *n - at - 1);
			(*n)--;
		}
		break;
	case 4: {
		size_t k = rng() % s->n;

		if (*n + s->size[k] <= FUZZ_MAX_INPUT) {
			memcpy(buf + *n, s->data[k], s->size[k]);
			*n += s->size[k];
		}
		break;
	}
	default:
		*n = at;
		break;
	}
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static unsigned long run_random(const struct seeds *s, double seconds)
{
	static char buf[FUZZ_MAX_INPUT];
	double end = now_s() + seconds;
	unsigned long runs = 0;

	while (runs % 256 != 0 || now_s() < end) {
		size_t k = rng() % s->n, n = s->size[k];
		unsigned edits = 1 + (unsigned)(rng() % FUZZ_MAX_EDITS);

		memcpy(buf, s->data[k], n);
		for (unsigned i = 0; i < edits; i++)
			mutate(buf, &n, s);
		LLVMFuzzerTestOneInput((const uint8_t *)buf, n);
		runs++;
	}
	return runs;
}

int main(int argc, char **argv)
{
	struct seeds s = { .n = 0 };
	unsigned long long seed;
	const char *env;
	double seconds = 2;
	int files = 0, rc = 0;

	fuzz_builtin(&s);
	for (int i = 1; i < argc && rc == 0; i++)
		rc = replay_path(&s, argv[i], &files);
	if (argc > 1) {
		printf(FUZZ_NAME ": replayed %d inputs\n", files);
		goto out;
	}
	if ((env = getenv("SIDECARD_SRCDIR")) != NULL) {
		char dir[4096];

		snprintf(dir, sizeof(dir), "%s/" FUZZ_CORPUS, env);
		rc = replay_path(&s, dir, &files);
	}
	if ((env = getenv("FUZZ_SECONDS")) != NULL)
		seconds = atof(env);
	seed = (env = getenv("FUZZ_SEED")) != NULL ? strtoull(env, NULL, 0) : 0;
	if (seed == 0)
		seed = (unsigned long long)time(NULL) | 1;
	rng_state = seed;
	if (rc == 0) {
		printf(FUZZ_NAME ": replayed %d corpus inputs; random inputs with FUZZ_SEED=%llu\n",
		       files, seed);
		fflush(stdout);
		printf(FUZZ_NAME ": %lu random inputs passed\n", run_random(&s, seconds));
#ifdef FUZZ_FINISH
		FUZZ_FINISH();
#endif
	}
out:
	for (size_t i = 0; i < s.n; i++)
		free(s.data[i]);
	return rc == 0 ? 0 : 1;
}

#endif /* SIDECARD_FUZZ_STANDALONE_H */
