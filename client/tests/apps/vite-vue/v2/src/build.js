// Which build this is; the versions of the app differ here.
export const BUILD = '2';
export const greeting = (name) => `Hi ${name}, this is build ${BUILD}`;
