// Which build this is; the versions of the app differ here.
export const BUILD = '1';
export const greeting = (name) => `Hello ${name}, from build ${BUILD}`;
