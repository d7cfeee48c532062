/* core: the maps shared by every family (see shared.h).  No programs: it
 * cannot fail for a missing tracepoint, and it outlives every family. */
#define VPROF_CORE 1
#include "shared.h"
