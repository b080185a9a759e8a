/**
 * The public API of the libipc core. Nothing else is imported from outside the package
 * (the `exports` map enforces it).
 */
export { ErrorCode, IpcError, hasCode, type ErrorCodeValue } from './errors.js';
export { DEFAULT_MAX_PAYLOAD, HEADER_SIZE, FrameDecoder, FrameTracker, encodeFrame, encodeHeader } from './frame.js';
export { DEFAULT_RUNDIR, MAX_SERVICE_NAME_LENGTH, assertServiceName, checkRundir, ensureRundir, resolveRundir, serviceNameProblem, servicePath } from './rundir.js';
export { serveService, type ServeOptions, type ServiceServer } from './service.js';
export { connectIpc, connectService, type ConnectIpcOptions, type ConnectOptions } from './client.js';
export { Connection, ConnectionKind, Context, EventType, type ContextOptions, type IpcEvent } from './context.js';
export { Endpoint, Outcome, SocketEndpoint, Switch, type Forward, type SwitchOptions, type SwitchResult, type SwitchSummary } from './switch.js';
export { formatLookup, parseLookup, parseNetwork, parseTarget, routeFor, type NetworkEntry, type Target } from './network.js';
export { descriptorOf, handOverSocket, receiveFd, sendFd, socketFromFd } from './fdpass.js';
export { createLogger, silentLogger, type Logger, type LoggerOptions } from './log.js';
