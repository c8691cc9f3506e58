package agent

// What the external tests reach inside: the operating system's part of preparing the state
// directory, so that a refusal Windows alone can produce (another owner) is tested on Linux.
type (
	DirInfo = dirInfo
	DirOps  = dirOps
)

// PrepareStateDirWith prepares a state directory through ops.
var PrepareStateDirWith = prepareStateDirWith
